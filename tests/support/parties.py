"""The organisations around a device in the job-engine tests (tests/jobs, tests/tee): an SE issuer
that also makes the device, a TSM under its mandate and the provider's, a service provider and a
stranger, each with an owner; Celery eager and no agent hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Parties:
    sei: Any
    tsm: Any
    provider: Any
    stranger: Any
    users: dict[str, Any]
    sei_actor: Any
    tsm_for_sei: Any
    provider_actor: Any
    stranger_actor: Any


def job_parties(settings: Any, monkeypatch: Any) -> Parties:
    from portal.celery import app
    from tenants.access import Actor
    from tenants.models import Mandate, MemberRole, OrgRole
    from tests import factories as f

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
    return Parties(
        sei=sei,
        tsm=tsm,
        provider=provider,
        stranger=stranger,
        users=users,
        sei_actor=Actor(user=users["sei"], org=sei, member_role=MemberRole.OWNER),
        tsm_for_sei=Actor(
            user=users["tsm"],
            org=tsm,
            member_role=MemberRole.OWNER,
            on_behalf_of=sei,
            mandate=Mandate.objects.get(grantor=sei, grantee=tsm),
        ),
        provider_actor=Actor(user=users["supplier"], org=provider, member_role=MemberRole.OWNER),
        stranger_actor=Actor(user=users["stranger"], org=stranger, member_role=MemberRole.OWNER),
    )
