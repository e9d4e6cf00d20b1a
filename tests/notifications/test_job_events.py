"""A real job, run through the engine and a software SE, notifies the webhooks of the
organisations that see it — and no one else's."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client

from notifications import services
from notifications.models import Delivery
from notifications.signing import verify
from tests.jobs.conftest import jobworld  # noqa: F401  (the fixture)
from tests.notifications.conftest import Receiver


def test_a_job_event_reaches_the_requesters_webhook_and_not_a_strangers(
    jobworld: Any,  # noqa: F811
    receiver: Receiver,
) -> None:
    from jobs.services import job_request
    from tenants.access import Actor
    from tenants.models import MemberRole

    # given webhooks of the requesting TSM (job events) and of a stranger (every event)
    tsm_actor = Actor(user=jobworld.users["tsm"], org=jobworld.tsm, member_role=MemberRole.OWNER)
    tsm_hook, tsm_secret = services.webhook_create(
        actor=tsm_actor, url=receiver.url + "/tsm", event_types=["job.*"]
    )
    stranger_hook, _ = services.webhook_create(
        actor=jobworld.stranger_actor, url=receiver.url + "/stranger", event_types=["*"]
    )
    # when the TSM has an SD created for the supplier on the SEI's device, and the agent runs it
    job = job_request(
        actor=jobworld.tsm_for_sei,
        device=jobworld.device,
        kind="create_security_domain",
        params={"aid": "A0000001515350AA01", "owner": "supplier"},
    )
    jobworld.gateway.run(Client())
    job.refresh_from_db()
    assert job.state == "succeeded"
    # then the TSM's receiver heard the job through to its end, every POST signed
    tsm_posts = [r for r in receiver.received if r.path.endswith("/tsm")]
    types = [json.loads(r.body)["type"] for r in tsm_posts]
    assert types and types[-1] == "job.succeeded", types
    for r in tsm_posts:
        verify(tsm_secret, r.headers["X-Tessera-Timestamp"], r.body, r.headers["X-Tessera-Signature"])
        data = json.loads(r.body)["data"]
        assert data["job"] == str(job.pk) and data["kind"] == "job"
    # and the stranger's heard nothing, and has no delivery
    assert not [r for r in receiver.received if r.path.endswith("/stranger")]
    assert not Delivery.objects.filter(webhook=stranger_hook).exists()
    assert Delivery.objects.filter(webhook=tsm_hook).count() == len(tsm_posts)
