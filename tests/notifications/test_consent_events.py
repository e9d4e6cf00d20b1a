"""Consent events reach the subscriber's and the provider's webhooks, and nobody else's."""

from __future__ import annotations

import json
from typing import Any

from notifications import services
from notifications.models import Delivery
from tenants.access import resolve_actor
from tests.notifications.conftest import Receiver


def test_a_consent_request_and_its_approval_notify_both_parties_and_not_a_stranger(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    from tenants.consent import consent_decide, consent_request

    provider = resolve_actor(world.provider_user, "provider-sp")
    home = resolve_actor(world.subscriber_user, "home-ss")
    stranger = resolve_actor(world.stranger_user, "stranger-sp")
    services.webhook_create(actor=provider, url=receiver.url + "/provider", event_types=["consent.*"])
    services.webhook_create(actor=home, url=receiver.url + "/home", event_types=["*"])
    stranger_hook, _ = services.webhook_create(
        actor=stranger, url=receiver.url + "/stranger", event_types=["*"]
    )
    with django_capture_on_commit_callbacks(execute=True):
        consent = consent_request(
            actor=provider,
            device=world.device,
            purpose="Billing your electricity",
            scopes=["own_security_domain", "readings"],
            duration_days=365,
            sd_aid="A000000151535041AA",
        )
    with django_capture_on_commit_callbacks(execute=True):
        consent_decide(actor=home, consent=consent, approve=True)
    by_path: dict[str, list[str]] = {}
    for r in receiver.received:
        body = json.loads(r.body)
        assert body["data"]["consent"] == str(consent.pk)
        by_path.setdefault(r.path, []).append(body["type"])
    assert by_path["/hook/provider"] == ["consent.requested", "consent.granted"]
    assert by_path["/hook/home"] == ["consent.requested", "consent.granted"]
    assert "/hook/stranger" not in by_path
    assert not Delivery.objects.filter(webhook=stranger_hook).exists()
