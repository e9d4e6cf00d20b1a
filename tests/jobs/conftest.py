from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.jobs.gateway import ISD_AID, Gateway
from tests.support.parties import Parties, job_parties


@dataclass
class JobWorld(Parties):
    device: Any
    se: Any
    gateway: Gateway


@pytest.fixture
def jobworld(transactional_db: Any, settings: Any, monkeypatch: Any) -> JobWorld:
    from devices.services import device_register
    from keys.services import secure_element_enrol

    p = job_parties(settings, monkeypatch)
    gateway = Gateway.create()
    device = device_register(
        actor=p.sei_actor,
        serial="GW-0001",
        kind="meter",
        identity_public_key=gateway.public_pem,
        se_issuer="sei",
        se_serial="SE0001",
    )
    enrolment = secure_element_enrol(
        actor=p.sei_actor,
        serial="SE0001",
        kind="se",
        isd_aid=ISD_AID,
        keys=gateway.isd_keys,
        kvn=0x30,
        i_param=0x70,
        sequence_counter=1,
        device_manufacturer="sei",
        device_serial="GW-0001",
    )
    device.refresh_from_db()
    return JobWorld(**vars(p), device=device, se=enrolment.secure_element, gateway=gateway)
