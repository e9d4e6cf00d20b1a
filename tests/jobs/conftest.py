from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests import factories as f
from tests.jobs.gateway import ISD_AID, Gateway


@dataclass
class JobWorld:
    sei: Any
    tsm: Any
    provider: Any
    stranger: Any
    sei_actor: Any
    tsm_for_sei: Any
    provider_actor: Any
    stranger_actor: Any
    device: Any
    se: Any
    gateway: Gateway
    users: dict[str, Any]


@pytest.fixture
def jobworld(transactional_db: Any, settings: Any, monkeypatch: Any) -> JobWorld:
    from devices.services import device_register
    from keys.services import secure_element_enrol
    from portal.celery import app
    from tenants.access import Actor
    from tenants.models import Mandate, MemberRole, OrgRole

    settings.TESSERA_AGENT_HOLD_MS = 0
    # In process: tasks run eagerly even when REDIS_URL is set (CI); no worker shares this test DB.
    # (The cache is not cleared: on CI it is the shared Redis. Every world has fresh ids anyway.)
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    monkeypatch.setitem(app.conf, "task_eager_propagates", True)
    sei = f.OrganisationFactory(slug="sei", roles=[OrgRole.SE_ISSUER, OrgRole.DEVICE_MANUFACTURER])
    tsm = f.OrganisationFactory(slug="tsm", roles=[OrgRole.TSM])
    provider = f.OrganisationFactory(slug="supplier", roles=[OrgRole.SERVICE_PROVIDER])
    stranger = f.OrganisationFactory(slug="stranger", roles=[OrgRole.SERVICE_PROVIDER])
    users = {}
    for org in (sei, tsm, provider, stranger):
        users[org.slug] = f.MembershipFactory(
            org=org, user=f.UserFactory(username=f"{org.slug}-user"), role=MemberRole.OWNER
        ).user
    Mandate.objects.create(
        grantor=sei, grantee=tsm, actions=["devices.view", "sd.create", "sd.delete", "status.read"]
    )
    Mandate.objects.create(grantor=provider, grantee=tsm, actions=["sd.create", "sd.delete", "keys.rotate"])
    sei_actor = Actor(user=users["sei"], org=sei, member_role=MemberRole.OWNER)
    gateway = Gateway.create()
    device = device_register(
        actor=sei_actor,
        serial="GW-0001",
        kind="meter",
        identity_public_key=gateway.public_pem,
        se_issuer="sei",
        se_serial="SE0001",
    )
    enrolment = secure_element_enrol(
        actor=sei_actor,
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
    tsm_for_sei = Actor(
        user=users["tsm"],
        org=tsm,
        member_role=MemberRole.OWNER,
        on_behalf_of=sei,
        mandate=Mandate.objects.get(grantor=sei, grantee=tsm),
    )
    return JobWorld(
        sei=sei,
        tsm=tsm,
        provider=provider,
        stranger=stranger,
        sei_actor=sei_actor,
        tsm_for_sei=tsm_for_sei,
        provider_actor=Actor(user=users["supplier"], org=provider, member_role=MemberRole.OWNER),
        stranger_actor=Actor(user=users["stranger"], org=stranger, member_role=MemberRole.OWNER),
        device=device,
        se=enrolment.secure_element,
        gateway=gateway,
        users=users,
    )
