from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from tests import factories as f
from tests.jobs.conftest import jobworld  # noqa: F401  (the fixture)

OLD_SD = "A0000001515350534F4C44"
NEW_SD = "A00000015153504E4557"
APP = "A0000001515350415050"


@dataclass
class SwitchWorld:
    w: Any  # the jobworld: sei (issuer), tsm, provider (old), stranger, device, se, gateway
    subscriber: Any
    subscriber_actor: Any
    new_provider: Any
    new_provider_actor: Any
    contract: Any

    def run(self, rounds: int = 60) -> int:
        return self.w.gateway.run(Client(), rounds=rounds)


def run_job(w: Any, actor: Any, kind: str, params: dict[str, Any]) -> Any:
    from jobs.services import job_request

    job = job_request(actor=actor, device=w.device, kind=kind, params=params)
    w.gateway.run(Client())
    job.refresh_from_db()
    assert job.state == "succeeded", (job.error_code, job.error_message)
    return job


@pytest.fixture
def sworld(jobworld: Any) -> SwitchWorld:  # noqa: F811
    """The old provider ("supplier") serves the subscriber from its SD on the card; a new provider
    ("greenco") is ready to take over."""
    from tenants.access import Actor
    from tenants.models import Contract, MemberRole, OrgRole

    w = jobworld
    run_job(w, w.sei_actor, "create_security_domain", {"aid": OLD_SD, "owner": "supplier"})
    subscriber = f.OrganisationFactory(slug="home", roles=[OrgRole.SERVICE_SUBSCRIBER])
    new_provider = f.OrganisationFactory(slug="greenco", roles=[OrgRole.SERVICE_PROVIDER])
    for org in (subscriber, new_provider):
        w.users[org.slug] = f.MembershipFactory(
            org=org, user=f.UserFactory(username=f"{org.slug}-user"), role=MemberRole.OWNER
        ).user
    w.device.subscriber = subscriber
    w.device.save(update_fields=["subscriber"])
    contract = Contract.objects.create(
        subscriber=subscriber,
        provider=w.provider,
        device=w.device,
        service="Electricity supply",
        switch_allowed=True,
        sd_aid=OLD_SD,
    )
    return SwitchWorld(
        w=w,
        subscriber=subscriber,
        subscriber_actor=Actor(user=w.users["home"], org=subscriber, member_role=MemberRole.OWNER),
        new_provider=new_provider,
        new_provider_actor=Actor(user=w.users["greenco"], org=new_provider, member_role=MemberRole.OWNER),
        contract=contract,
    )
