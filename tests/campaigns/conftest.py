"""A fleet of meters for campaign tests: N devices, each an in-process gateway with its own software
SE, issued by ``sei``, the old provider's (``supplier``) SD on every card and a lease contract
(no consent needed: the issuer assigns the provider) — a supplier taking over a batch of meters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import Client

from tests import factories as f
from tests.jobs.conftest import jobworld  # noqa: F401  (the fixture)
from tests.jobs.gateway import ISD_AID, Gateway
from tests.support.fixtures import fast_password_hasher  # noqa: F401  (autouse)

OLD_SD = "A0000001515350534F4C44"
SERVICE = "Electricity supply"
ERROR_SW = b"\x6a\x80"


@dataclass
class Fleet:
    w: Any  # the jobworld: sei (issuer), tsm, supplier (old provider), stranger, …
    devices: list[Any]
    gateways: dict[str, Gateway]  # serial → gateway
    new_provider: Any
    new_provider_actor: Any
    subscriber: Any
    broken: set[str] = field(default_factory=set)  # serials whose card answers 6A80 (see break_card)

    @property
    def serials(self) -> list[str]:
        return [d.serial for d in self.devices]

    def break_card(self, serial: str, *, during: str | None = "create_sd") -> None:
        """The card of ``serial`` answers 6A80 to every command while its switch is at step
        ``during`` going forward (a card error at that step: the saga undoes it cleanly), or from now
        on whatever runs when ``during`` is None."""
        from switches.models import Switch

        card = self.gateways[serial].card
        real = card.transmit

        def transmit(apdu: bytes) -> bytes:
            if during is None:
                return ERROR_SW
            at_step = Switch.objects.filter(device__serial=serial, state="running", step=during).exists()
            return ERROR_SW if at_step else real(apdu)

        card.transmit = transmit  # type: ignore[method-assign]
        self.broken.add(serial)

    def run(self, rounds: int = 400, until: Callable[[], bool] | None = None) -> int:
        """Poll every gateway like its agent, round after round, until none has work (and
        ``until()`` holds, if given). Returns the rounds used."""
        client = Client()
        for n in range(1, rounds + 1):
            busy = False
            for gateway in self.gateways.values():
                answer = gateway.exchange(client)
                busy = busy or bool(answer.work) or bool(gateway.pending)
            if not busy and (until is None or until()):
                return n
        raise AssertionError("the fleet kept receiving work")


def _add_meter(w: Any, serial: str, se_serial: str, subscriber: Any) -> tuple[Any, Gateway]:
    from devices.services import device_register
    from keys.services import secure_element_enrol
    from tenants.models import Contract

    gateway = Gateway.create()
    device = device_register(
        actor=w.sei_actor,
        serial=serial,
        kind="meter",
        identity_public_key=gateway.public_pem,
        se_issuer="sei",
        se_serial=se_serial,
    )
    secure_element_enrol(
        actor=w.sei_actor,
        serial=se_serial,
        kind="se",
        isd_aid=ISD_AID,
        keys=gateway.isd_keys,
        kvn=0x30,
        i_param=0x70,
        sequence_counter=1,
        device_manufacturer="sei",
        device_serial=serial,
    )
    device.refresh_from_db()
    device.subscriber = subscriber
    device.save(update_fields=["subscriber"])
    Contract.objects.create(
        subscriber=subscriber,
        provider=w.provider,
        device=device,
        service=SERVICE,
        switch_allowed=True,
        consent_required=False,
        sd_aid=OLD_SD,
    )
    return device, gateway


def make_fleet(w: Any, n: int) -> Fleet:
    from jobs.services import job_request
    from tenants.access import Actor
    from tenants.models import MemberRole, OrgRole

    subscriber = f.OrganisationFactory(slug="homes", roles=[OrgRole.SERVICE_SUBSCRIBER])
    new_provider = f.OrganisationFactory(slug="greenco", roles=[OrgRole.SERVICE_PROVIDER])
    for org in (subscriber, new_provider):
        w.users[org.slug] = f.MembershipFactory(
            org=org, user=f.UserFactory(username=f"{org.slug}-user"), role=MemberRole.OWNER
        ).user
    devices, gateways = [], {}
    # The jobworld's own device is a meter of the fleet too.
    w.device.subscriber = subscriber
    w.device.save(update_fields=["subscriber"])
    from tenants.models import Contract

    Contract.objects.create(
        subscriber=subscriber,
        provider=w.provider,
        device=w.device,
        service=SERVICE,
        switch_allowed=True,
        consent_required=False,
        sd_aid=OLD_SD,
    )
    devices.append(w.device)
    gateways[w.device.serial] = w.gateway
    for i in range(2, n + 1):
        device, gateway = _add_meter(w, f"GW-{i:04d}", f"SE{i:04d}", subscriber)
        devices.append(device)
        gateways[device.serial] = gateway
    fleet = Fleet(
        w=w,
        devices=devices,
        gateways=gateways,
        new_provider=new_provider,
        new_provider_actor=Actor(user=w.users["greenco"], org=new_provider, member_role=MemberRole.OWNER),
        subscriber=subscriber,
    )
    # The old provider's SD on every card (created by the issuer, as in production).
    for device in devices:
        job_request(
            actor=w.sei_actor,
            device=device,
            kind="create_security_domain",
            params={"aid": OLD_SD, "owner": "supplier"},
        )
    fleet.run()
    from devices.models import SecurityDomain

    assert SecurityDomain.objects.filter(aid=OLD_SD).count() == n
    return fleet


@pytest.fixture
def fleet(jobworld: Any) -> Fleet:  # noqa: F811
    return make_fleet(jobworld, 6)


@pytest.fixture
def small_fleet(jobworld: Any) -> Fleet:  # noqa: F811
    return make_fleet(jobworld, 2)
