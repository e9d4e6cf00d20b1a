"""Deliveries to a real HTTP receiver through real (eager) Celery tasks: signatures, retries with
backoff, 410, timeouts, and no secret anywhere but the receiver's hands."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from notifications import services
from notifications.models import Delivery, DeliveryStatus, Webhook
from notifications.signing import SignatureError, verify
from portal.events import publish
from tenants.access import resolve_actor
from tests.notifications.conftest import Receiver


def _owner(world: Any) -> Any:
    return resolve_actor(world.owner_user, "owner-sei")


def _job_event(world: Any, state: str = "succeeded") -> dict[str, Any]:
    return {
        "kind": "job",
        "job": str(uuid.uuid4()),
        "job_kind": "read_status",
        "state": state,
        "device": str(world.device.pk),
        "step": 1,
    }


def _hook(world: Any, receiver: Receiver, patterns: list[str] | None = None) -> tuple[Webhook, str]:
    return services.webhook_create(actor=_owner(world), url=receiver.url, event_types=patterns or ["job.*"])


def _emit(capture: Any, world: Any, event: dict[str, Any], orgs: list[Any] | None = None) -> None:
    with capture(execute=True):
        publish(orgs or [world.owner.pk], event)


def test_a_job_event_arrives_signed_and_the_receiver_verifies_the_signature(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    # given a webhook for job events and its secret (shown once)
    webhook, secret = _hook(world, receiver)
    event = _job_event(world)
    # when a job event is published to the owner
    _emit(django_capture_on_commit_callbacks, world, event)
    # then the receiver got one POST it can verify with the secret
    assert len(receiver.received) == 1
    got = receiver.received[0]
    h = {k.lower(): v for k, v in got.headers.items()}
    verify(secret, h["x-tessera-timestamp"], got.body, h["x-tessera-signature"])
    assert h["x-tessera-event"] == "job.succeeded"
    assert h["content-type"] == "application/json"
    payload = json.loads(got.body)
    assert payload["type"] == "job.succeeded" and payload["organisation"] == "owner-sei"
    assert payload["data"] == event
    delivery = Delivery.objects.get(webhook=webhook)
    assert h["x-tessera-delivery"] == str(delivery.pk)
    assert payload["id"] == str(delivery.event_id)
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1
    assert delivery.last_status_code == 200 and delivery.delivered_at is not None
    # and a wrong secret, a changed body or a stale timestamp do not verify
    with pytest.raises(SignatureError):
        verify("whsec_wrong", h["x-tessera-timestamp"], got.body, h["x-tessera-signature"])
    with pytest.raises(SignatureError):
        verify(secret, h["x-tessera-timestamp"], got.body + b" ", h["x-tessera-signature"])
    with pytest.raises(SignatureError):
        stale = float(h["x-tessera-timestamp"]) + 3600
        verify(secret, h["x-tessera-timestamp"], got.body, h["x-tessera-signature"], now=stale)


def test_a_filter_that_does_not_take_the_event_creates_no_delivery(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    _hook(world, receiver, ["consent.*", "job.failed"])
    _emit(django_capture_on_commit_callbacks, world, _job_event(world, "succeeded"))
    _emit(django_capture_on_commit_callbacks, world, {"kind": "audit", "seq": 1, "tag": "x"})
    assert receiver.received == [] and not Delivery.objects.exists()
    _emit(django_capture_on_commit_callbacks, world, _job_event(world, "failed"))
    assert [json.loads(r.body)["type"] for r in receiver.received] == ["job.failed"]


def test_a_failing_receiver_is_retried_with_backoff_and_delivered_on_the_second_attempt(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    # given a receiver that fails once, then succeeds
    receiver.answer(500, 200)
    webhook, secret = _hook(world, receiver)
    before = timezone.now()
    # when the event is published
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    # then the first attempt failed and a retry is scheduled about a minute later (jittered)
    d = Delivery.objects.get(webhook=webhook)
    assert d.status == DeliveryStatus.PENDING and d.attempts == 1 and d.last_status_code == 500
    assert d.last_error == "HTTP 500"
    retry_in = d.attempts_log[0]["retry_in_s"]
    assert 48 <= retry_in <= 72
    assert before + timedelta(seconds=47) <= d.next_attempt_at <= timezone.now() + timedelta(seconds=73)
    # and the sweep does not pick it up before its time
    assert services.deliveries_due() == []
    # when the sweep runs once the backoff has passed
    from notifications.tasks import deliver

    for pk in services.deliveries_due(now=d.next_attempt_at + timedelta(seconds=1)):
        deliver.apply_async(args=[pk])
    # then the second attempt delivered it, with the same delivery id, signed afresh
    d.refresh_from_db()
    assert d.status == DeliveryStatus.DELIVERED and d.attempts == 2 and d.last_status_code == 200
    assert [a["status_code"] for a in d.attempts_log] == [500, 200]
    assert len(receiver.received) == 2
    ids = {r.headers["X-Tessera-Delivery"] for r in receiver.received}
    assert ids == {str(d.pk)}
    for r in receiver.received:
        verify(secret, r.headers["X-Tessera-Timestamp"], r.body, r.headers["X-Tessera-Signature"])


def test_backoff_grows_and_the_last_failure_is_final(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    receiver.answer(503)
    webhook, _ = _hook(world, receiver)
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    d = Delivery.objects.get(webhook=webhook)
    while d.status == DeliveryStatus.PENDING:
        services.delivery_attempt(delivery_id=d.pk)
        d.refresh_from_db()
    assert d.status == DeliveryStatus.FAILED and d.attempts == services.MAX_ATTEMPTS
    delays = [a["retry_in_s"] for a in d.attempts_log if "retry_in_s" in a]
    assert len(delays) == services.MAX_ATTEMPTS - 1
    for delay, base in zip(delays, services.BACKOFF_SECONDS, strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert d.next_attempt_at is None and len(receiver.received) == services.MAX_ATTEMPTS
    # a failed delivery is never attempted again
    assert services.delivery_attempt(delivery_id=d.pk) == "skipped"


def test_410_gone_disables_the_webhook_and_stops(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    receiver.answer(410)
    webhook, _ = _hook(world, receiver)
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    d = Delivery.objects.get(webhook=webhook)
    webhook.refresh_from_db()
    assert d.status == DeliveryStatus.FAILED and d.attempts == 1 and d.last_status_code == 410
    assert not webhook.active and "410" in webhook.disabled_reason
    # later events create no delivery for a disabled webhook
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    assert Delivery.objects.filter(webhook=webhook).count() == 1
    assert len(receiver.received) == 1


def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt_retried_later(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    receiver.answer((200, 2.5))
    webhook, _ = _hook(world, receiver)
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    d = Delivery.objects.get(webhook=webhook)
    assert d.status == DeliveryStatus.PENDING and d.attempts == 1
    assert d.last_status_code is None and "timed out" in d.last_error
    assert d.attempts_log[0]["duration_ms"] < 2400


def test_a_slow_receiver_does_not_hold_up_another_webhook(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    # given two webhooks of the owner: a slow (timing out) one first, a healthy one second
    from tests.notifications.conftest import _handler  # noqa: PLC0415

    receiver.answer((200, 2.5))
    slow, _ = _hook(world, receiver)
    from http.server import ThreadingHTTPServer

    ref: list[Receiver] = []
    other_server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ref))
    other = Receiver(server=other_server)
    ref.append(other)
    import threading

    threading.Thread(target=other_server.serve_forever, daemon=True).start()
    try:
        fast, _ = _hook(world, other)
        # when one event goes to both
        _emit(django_capture_on_commit_callbacks, world, _job_event(world))
        # then each delivery is its own attempt: the healthy one is delivered, the slow one retried
        assert Delivery.objects.get(webhook=fast).status == DeliveryStatus.DELIVERED
        assert Delivery.objects.get(webhook=slow).status == DeliveryStatus.PENDING
        assert len(other.received) == 1
    finally:
        other_server.shutdown()
        other_server.server_close()


def test_an_unreachable_receiver_is_a_failed_attempt_with_a_clear_error(
    world: Any, django_capture_on_commit_callbacks: Any
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    webhook, _ = services.webhook_create(
        actor=_owner(world), url=f"http://127.0.0.1:{port}/x", event_types=["*"]
    )
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    d = Delivery.objects.get(webhook=webhook)
    assert d.status == DeliveryStatus.PENDING and d.last_status_code is None
    assert "could not reach the receiver" in d.last_error


def test_after_rotation_both_secrets_sign_for_the_grace_period_then_only_the_new_one(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    webhook, old = _hook(world, receiver)
    new = services.webhook_rotate_secret(actor=_owner(world), webhook=webhook)
    assert new != old and new.startswith("whsec_")
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    got = receiver.received[0]
    sig = got.headers["X-Tessera-Signature"]
    assert sig.count("v1=") == 2
    # a receiver holding either secret verifies it during the grace period
    verify(new, got.headers["X-Tessera-Timestamp"], got.body, sig)
    verify(old, got.headers["X-Tessera-Timestamp"], got.body, sig)
    # when the grace period is over, only the new secret signs
    Webhook.objects.filter(pk=webhook.pk).update(previous_secret_expires_at=timezone.now())
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    got = receiver.received[1]
    assert got.headers["X-Tessera-Signature"].count("v1=") == 1
    verify(new, got.headers["X-Tessera-Timestamp"], got.body, got.headers["X-Tessera-Signature"])
    with pytest.raises(SignatureError):
        verify(old, got.headers["X-Tessera-Timestamp"], got.body, got.headers["X-Tessera-Signature"])


def test_rotating_a_leaked_secret_stops_it_signing_at_once(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    webhook, leaked = _hook(world, receiver)
    new = services.webhook_rotate_secret(actor=_owner(world), webhook=webhook, expire_previous=True)
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    got = receiver.received[0]
    verify(new, got.headers["X-Tessera-Timestamp"], got.body, got.headers["X-Tessera-Signature"])
    with pytest.raises(SignatureError):
        verify(leaked, got.headers["X-Tessera-Timestamp"], got.body, got.headers["X-Tessera-Signature"])


def test_no_secret_in_the_database_payloads_logs_or_audit(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any, caplog: Any
) -> None:
    from audit.models import AuditEvent

    caplog.set_level(logging.DEBUG)
    receiver.answer(500, 200)
    webhook, secret = _hook(world, receiver)
    rotated = services.webhook_rotate_secret(actor=_owner(world), webhook=webhook)
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    services.delivery_attempt(delivery_id=Delivery.objects.get().pk)
    for s in (secret, rotated):
        needle = s.encode()
        assert all(needle not in r.body for r in receiver.received)
        assert all(s not in json.dumps(r.headers) for r in receiver.received)
        assert s not in caplog.text
        for d in Delivery.objects.all():
            assert s not in json.dumps([d.payload, d.attempts_log, d.last_error])
        for e in AuditEvent.objects.all():
            assert s not in json.dumps(e.details) and s not in e.target_repr
        # sealed, not in the clear
        stored = Webhook.objects.get(pk=webhook.pk)
        assert needle not in bytes(stored.secret_sealed)
        assert needle not in bytes(stored.previous_secret_sealed or b"")


def test_the_publish_hook_costs_no_query_for_other_events_and_one_for_a_job_event(
    world: Any, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):
        services.deliveries_for_event([world.owner.pk], {"kind": "audit", "seq": 1})
    with django_assert_num_queries(1):
        services.deliveries_for_event([world.owner.pk, world.stranger.pk], _job_event(world))


def test_a_rolled_back_change_leaves_no_delivery_and_sends_nothing(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    from django.db import transaction

    _hook(world, receiver)
    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                publish([world.owner.pk], _job_event(world))
                raise RuntimeError("the business operation failed after publishing")
        except RuntimeError:
            pass
    assert not Delivery.objects.exists() and receiver.received == []


def test_outside_development_a_url_that_now_points_at_a_private_address_is_not_called(
    world: Any, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    # given a webhook whose URL was valid, then points (here: directly) at the platform's network
    webhook, _ = services.webhook_create(
        actor=_owner(world), url="https://hooks.example.test/x", event_types=["job.*"]
    )
    Webhook.objects.filter(pk=webhook.pk).update(url="https://10.1.2.3/x")
    settings.EMBEDDED = False
    settings.DEBUG = False
    # when an event is delivered
    _emit(django_capture_on_commit_callbacks, world, _job_event(world))
    # then nothing was sent and the attempt says why
    d = Delivery.objects.get(webhook=webhook)
    assert d.status == DeliveryStatus.PENDING and d.last_status_code is None
    assert "private or reserved address" in d.last_error
