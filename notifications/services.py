"""Webhook writes and deliveries (STYLE habit 2: keyword-only, ``actor`` first, audited).

Deliveries start where live events start: ``portal.events.publish`` calls
``deliveries_for_event`` inside the publishing transaction, so a delivery row exists if and only
if the change it reports committed; its first attempt is enqueued on commit. Retries are picked
up by ``deliveries_due`` (a periodic sweep), never by in-process sleeps, so a slow or dead
receiver holds one worker slot for at most one timeout and a lost task is retried anyway.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from keys.vault import vault_open, vault_seal
from notifications import events
from notifications.access import MANAGE, require_webhooks
from notifications.models import Delivery, DeliveryStatus, Webhook
from notifications.signing import sign
from portal.errors import InvalidError
from portal.tasks import enqueue_on_commit
from tenants.access import Actor

log = logging.getLogger(__name__)

# Delay before retry n (after attempt n failed), in seconds; jittered by ±JITTER.
BACKOFF_SECONDS = (60, 300, 1800, 7200, 21600)
MAX_ATTEMPTS = len(BACKOFF_SECONDS) + 1
JITTER = 0.2
# While an attempt runs (or its task waits in the queue) the sweep leaves the delivery alone.
LEASE = timedelta(minutes=2)
# After a rotation the previous secret keeps signing (as a second v1=) for this long.
ROTATION_GRACE = timedelta(hours=24)
MAX_URL = 2000
SECRET_PREFIX = "whsec_"
USER_AGENT = "Tessera-Webhooks/1"

# Audit tags of this app (strings in the audit chain, like audit.models.AuditTag's values).
TAG_CREATE = AuditTag.WEBHOOK_CREATE
TAG_UPDATE = AuditTag.WEBHOOK_UPDATE
TAG_DELETE = AuditTag.WEBHOOK_DELETE
TAG_ROTATE = AuditTag.WEBHOOK_ROTATE
TAG_DISABLE = AuditTag.WEBHOOK_DISABLE


def _purpose(webhook_id: Any) -> str:
    return f"webhook-secret:{webhook_id}"


def _audit(actor: Actor | None, tag: str, webhook: Webhook, **details: Any) -> None:
    audit_record(
        actor=actor, tag=cast(Any, tag), target=webhook, details=details, concerns=[webhook.owner_id]
    )


# --- input checks ---------------------------------------------------------------------------------


def _local_http_allowed() -> bool:
    """http://127.0.0.1 (a developer's receiver) only on the embedded default or with DEBUG."""
    return bool(settings.DEBUG or getattr(settings, "EMBEDDED", False))


def clean_url(url: Any) -> str:
    """An https URL a webhook may call; http only to loopback where ``_local_http_allowed``.

    Refused with ``invalid_url`` (not a URL, credentials, fragment, control characters, too long),
    ``url_not_https``, or ``url_not_allowed`` (an IP literal in a private, link-local or reserved
    range, which would let a webhook probe the platform's own network).
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidError("url must be an https:// URL.", code="invalid_url", fields={"url": ["Required."]})
    url = url.strip()
    if len(url) > MAX_URL:
        raise InvalidError(
            f"url is longer than {MAX_URL} characters.", code="invalid_url", fields={"url": ["Too long."]}
        )
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidError(
            "url may not contain spaces or control characters.",
            code="invalid_url",
            fields={"url": ["Invalid."]},
        )
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidError(
            "url is not a valid URL.", code="invalid_url", fields={"url": ["Invalid."]}
        ) from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise InvalidError(
            "url must be an https:// URL with a host.", code="url_not_https", fields={"url": ["Not https."]}
        )
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise InvalidError(
            "url may not carry credentials or a #fragment; authenticate the request with its signature.",
            code="invalid_url",
            fields={"url": ["Invalid."]},
        )
    loopback = host in ("localhost", "127.0.0.1", "::1")
    if parts.scheme.lower() == "http" and not (loopback and _local_http_allowed()):
        raise InvalidError(
            "url must use https:// (plain http is allowed only to 127.0.0.1 in development).",
            code="url_not_https",
            fields={"url": ["Not https."]},
        )
    if loopback and not _local_http_allowed():
        raise InvalidError(
            "url may not point at this platform's own host.",
            code="url_not_allowed",
            fields={"url": ["Not allowed."]},
        )
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and not loopback and not ip.is_global:
        raise InvalidError(
            "url may not point at a private, link-local or reserved address.",
            code="url_not_allowed",
            fields={"url": ["Not allowed."]},
        )
    return url


def clean_event_types(value: Any) -> list[str]:
    """A de-duplicated list of patterns: ``*``, ``<family>.*`` or ``<family>.<name>``."""
    if not isinstance(value, list) or not value:
        raise InvalidError(
            'event_types must be a non-empty list, e.g. ["job.*"] or ["*"].',
            code="invalid_event_types",
            fields={"event_types": ["Required."]},
        )
    if len(value) > events.MAX_PATTERNS:
        raise InvalidError(
            f"event_types lists at most {events.MAX_PATTERNS} patterns.",
            code="too_many_event_types",
            fields={"event_types": ["Too many."]},
        )
    unknown = [v for v in value if not events.valid_pattern(v)]
    if unknown:
        families = ", ".join(f"{f}.*" for f in events.FAMILIES)
        raise InvalidError(
            f"Unknown event type {str(unknown[0])[:40]!r}; use '*', {families} or e.g. 'job.succeeded'.",
            code="unknown_event_type",
            fields={"event_types": ["Unknown event type."]},
        )
    return list(dict.fromkeys(value))


def _clean_description(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise InvalidError(
            "description is text of at most 200 characters.",
            code="invalid_description",
            fields={"description": ["Invalid."]},
        )
    return value.strip()


# --- webhooks -------------------------------------------------------------------------------------


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def webhook_create(
    *, actor: Actor, url: str, event_types: list[str], description: str = ""
) -> tuple[Webhook, str]:
    """Register a webhook for the acting organisation; returns it and its secret (shown once).

    Preconditions: the actor manages webhooks (owner/admin, not on behalf). Effects: the secret
    is sealed in the owner's vault; a ``webhook:create`` audit event.
    """
    require_webhooks(actor, MANAGE)
    url = clean_url(url)
    patterns = clean_event_types(event_types)
    description = _clean_description(description)
    secret = _new_secret()
    with transaction.atomic():
        webhook = Webhook(
            owner=actor.org,
            url=url,
            description=description,
            event_types=patterns,
            secret_rotated_at=timezone.now(),
        )
        webhook.secret_sealed = vault_seal(
            org_id=actor.org.pk, purpose=_purpose(webhook.pk), plaintext=secret.encode()
        )
        webhook.save()
        _audit(actor, TAG_CREATE, webhook, url=url, event_types=patterns)
    return webhook, secret


def webhook_update(
    *,
    actor: Actor,
    webhook: Webhook,
    url: str | None = None,
    event_types: list[str] | None = None,
    description: str | None = None,
    active: bool | None = None,
) -> Webhook:
    """Change what a webhook receives, where, or whether (re-activating clears the reason)."""
    require_webhooks(actor, MANAGE)
    changed: dict[str, Any] = {}
    if url is not None:
        changed["url"] = clean_url(url)
    if event_types is not None:
        changed["event_types"] = clean_event_types(event_types)
    if description is not None:
        changed["description"] = _clean_description(description)
    if active is not None:
        changed["active"] = bool(active)
        changed["disabled_reason"] = "" if active else "Disabled by a member."
    if not changed:
        return webhook
    with transaction.atomic():
        for field, value in changed.items():
            setattr(webhook, field, value)
        webhook.save(update_fields=[*changed, "updated_at"])
        _audit(actor, TAG_UPDATE, webhook, **{k: v for k, v in changed.items() if k != "disabled_reason"})
    return webhook


def webhook_delete(*, actor: Actor, webhook: Webhook) -> None:
    """Delete a webhook and its delivery log; pending deliveries are not attempted."""
    require_webhooks(actor, MANAGE)
    with transaction.atomic():
        _audit(actor, TAG_DELETE, webhook, url=webhook.url)
        webhook.delete()


def webhook_rotate_secret(*, actor: Actor, webhook: Webhook, expire_previous: bool = False) -> str:
    """Replace the signing secret; returns the new one (shown once).

    Effects: the next attempt of every delivery, pending ones included, is signed with the new
    secret and — for ``ROTATION_GRACE``, unless ``expire_previous`` (a leaked secret) — also with
    the one it replaces, as a second ``v1=`` value; a ``webhook:rotate_secret`` audit event.
    """
    require_webhooks(actor, MANAGE)
    secret = _new_secret()
    now = timezone.now()
    with transaction.atomic():
        if expire_previous:
            webhook.previous_secret_sealed, webhook.previous_secret_expires_at = None, None
        else:
            webhook.previous_secret_sealed = webhook.secret_sealed
            webhook.previous_secret_expires_at = now + ROTATION_GRACE
        webhook.secret_sealed = vault_seal(
            org_id=webhook.owner_id, purpose=_purpose(webhook.pk), plaintext=secret.encode()
        )
        webhook.secret_rotated_at = now
        webhook.save(
            update_fields=[
                "secret_sealed",
                "secret_rotated_at",
                "previous_secret_sealed",
                "previous_secret_expires_at",
                "updated_at",
            ]
        )
        _audit(actor, TAG_ROTATE, webhook, previous_kept=not expire_previous)
    return secret


def _signature(webhook: Webhook, timestamp: str, body: bytes) -> str:
    """``v1=<current>`` and, within the rotation grace, ``, v1=<previous>``."""
    blobs = [bytes(webhook.secret_sealed)]
    expires = webhook.previous_secret_expires_at
    if webhook.previous_secret_sealed and expires is not None and expires > timezone.now():
        blobs.append(bytes(webhook.previous_secret_sealed))
    values = []
    for blob in blobs:
        secret = vault_open(org_id=webhook.owner_id, purpose=_purpose(webhook.pk), blob=blob)
        values.append(sign(secret.decode(), timestamp, body))
        del secret
    return ", ".join(values)


def webhook_test_send(*, actor: Actor, webhook: Webhook) -> Delivery:
    """Send a ``webhook.test`` event now, whatever the webhook's filter (active or not)."""
    require_webhooks(actor, MANAGE)
    now = timezone.now()
    with transaction.atomic():
        delivery = Delivery.objects.create(
            webhook=webhook,
            event_type=events.TEST_EVENT,
            payload={},
            next_attempt_at=now + LEASE,
        )
        delivery.payload = _payload(
            event_id=delivery.event_id,
            etype=events.TEST_EVENT,
            at=now,
            org_slug=actor.org.slug,
            data={"kind": "webhook", "webhook": str(webhook.pk), "message": "A test event from Tessera."},
        )
        delivery.save(update_fields=["payload"])
        _enqueue(delivery.pk, force=True)
    return delivery


# --- deliveries -----------------------------------------------------------------------------------


def _payload(
    *, event_id: UUID, etype: str, at: datetime, org_slug: str, data: dict[str, Any]
) -> dict[str, Any]:
    """The JSON a receiver gets: the live event as it is (ids, states, names — never secrets)."""
    return {
        "id": str(event_id),
        "type": etype,
        "created_at": at.isoformat(),
        "organisation": org_slug,
        "data": data,
    }


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _enqueue(delivery_id: Any, *, force: bool = False) -> None:
    from notifications.tasks import deliver

    enqueue_on_commit(deliver, args=[str(delivery_id)], kwargs={"force": force} if force else None)


def deliveries_for_event(org_ids: Iterable[Any], event: dict[str, Any]) -> list[Delivery]:
    """A delivery for each active webhook of ``org_ids`` whose filter takes ``event``.

    Called by ``portal.events.publish`` in the publishing transaction (one query when the event
    is a webhook event; none otherwise). The same event has the same ``id`` for every receiver.
    """
    etype = events.event_type(event)
    if etype is None:
        return []
    targets = [o if isinstance(o, UUID) else UUID(str(o)) for o in org_ids]
    if not targets:
        return []
    webhooks = Webhook.objects.filter(owner_id__in=targets, active=True).select_related("owner")
    hooks = [h for h in webhooks if events.matches(h.event_types, etype)]
    if not hooks:
        return []
    now = timezone.now()
    event_id = uuid4()
    rows = [
        Delivery(
            webhook=h,
            event_id=event_id,
            event_type=etype,
            payload=_payload(event_id=event_id, etype=etype, at=now, org_slug=h.owner.slug, data=event),
            next_attempt_at=now + LEASE,
        )
        for h in hooks
    ]
    Delivery.objects.bulk_create(rows)
    for row in rows:
        _enqueue(row.pk)
    return rows


def backoff_seconds(attempt: int) -> float:
    """Delay after failed attempt ``attempt`` (1-based), jittered so receivers are not stampeded."""
    base = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS)) - 1]
    return round(base * random.uniform(1 - JITTER, 1 + JITTER), 1)


def _timeout() -> httpx.Timeout:
    total = float(getattr(settings, "TESSERA_WEBHOOK_TIMEOUT_SECONDS", 5.0))
    return httpx.Timeout(total, connect=min(total, 3.0))


def _private_target(url: str) -> bool:
    """Does the URL's host resolve to an address that is not public? (Checked at each attempt,
    outside development, so a name pointed at the platform's own network later is refused too.
    A resolver that fails is left to the request itself, which then fails as unreachable.)"""
    if _local_http_allowed():
        return False
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname or "", parts.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return any(not ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_global for info in infos)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    """POST once: (status code, "") or (None, what went wrong). The response body is not read."""
    try:
        with httpx.Client(timeout=_timeout(), follow_redirects=False) as client:
            with client.stream("POST", url, content=body, headers=headers) as resp:
                return resp.status_code, ""
    except httpx.TimeoutException:
        return None, f"timed out after {_timeout().read}s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: could not reach the receiver"


def delivery_attempt(*, delivery_id: Any, force: bool = False) -> str:
    """Attempt one delivery once; returns its status afterwards ("skipped" if not attempted).

    1. Claim the attempt by compare-and-set on ``attempts`` (two workers never send attempt n
       twice) and push ``next_attempt_at`` a lease ahead.
    2. Sign ``"<timestamp>.<body>"`` with the secret opened from the owner's vault; POST.
    3. 2xx: delivered. 410: failed, and the webhook is disabled. Else, if attempts remain: pending
       with a jittered backoff; otherwise failed. Every attempt is logged on the row.
    An inactive webhook's deliveries fail without a request (``force`` sends a test anyway).
    """
    d = Delivery.objects.select_related("webhook", "webhook__owner").filter(pk=delivery_id).first()
    if d is None or d.status != DeliveryStatus.PENDING:
        return "skipped"
    webhook = d.webhook
    if not webhook.active and not force:
        Delivery.objects.filter(pk=d.pk, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED, last_error="The webhook is disabled.", next_attempt_at=None
        )
        return DeliveryStatus.FAILED
    n = d.attempts + 1
    started_at = timezone.now()
    if not Delivery.objects.filter(pk=d.pk, status=DeliveryStatus.PENDING, attempts=n - 1).update(
        attempts=n, next_attempt_at=started_at + LEASE
    ):
        return "skipped"
    body = body_of(d.payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Tessera-Event": d.event_type,
        "X-Tessera-Delivery": str(d.pk),
        "X-Tessera-Timestamp": timestamp,
        "X-Tessera-Signature": _signature(webhook, timestamp, body),
    }
    clock = time.monotonic()
    if _private_target(webhook.url):
        code, error = None, "the URL's host resolves to a private or reserved address; not sent"
    else:
        code, error = _post(webhook.url, body, headers)
    entry: dict[str, Any] = {
        "attempt": n,
        "at": started_at.isoformat(),
        "status_code": code,
        "error": error,
        "duration_ms": round((time.monotonic() - clock) * 1000),
    }
    update: dict[str, Any] = {"last_status_code": code, "last_error": error}
    gone = code == 410
    if code is not None and 200 <= code < 300:
        update.update(status=DeliveryStatus.DELIVERED, delivered_at=timezone.now(), next_attempt_at=None)
    elif gone or n >= MAX_ATTEMPTS:
        if gone:
            update["last_error"] = "410 Gone: the receiver asked to stop; the webhook is disabled."
        update.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        delay = backoff_seconds(n)
        entry["retry_in_s"] = delay
        update["next_attempt_at"] = timezone.now() + timedelta(seconds=delay)
        if code is not None and not error:
            update["last_error"] = f"HTTP {code}"
    with transaction.atomic():
        update["attempts_log"] = [*d.attempts_log, entry][-MAX_ATTEMPTS * 2 :]
        Delivery.objects.filter(pk=d.pk, attempts=n, status=DeliveryStatus.PENDING).update(**update)
        if gone:
            _disable(webhook, "The receiver answered 410 Gone.")
    log.info("webhook delivery %s attempt %d: %s", d.pk, n, code if code is not None else error)
    return str(update.get("status", DeliveryStatus.PENDING))


def _disable(webhook: Webhook, reason: str) -> None:
    if Webhook.objects.filter(pk=webhook.pk, active=True).update(
        active=False, disabled_reason=reason, updated_at=timezone.now()
    ):
        _audit(None, TAG_DISABLE, webhook, reason=reason)


def deliveries_due(*, now: datetime | None = None, limit: int = 200) -> list[str]:
    """Claim pending deliveries whose retry time has come (or whose attempt was lost); their ids.

    Each is claimed by compare-and-set on ``next_attempt_at`` (moved a lease ahead), so two
    sweeps never both enqueue it.
    """
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", "next_attempt_at")[:limit]
    )
    claimed = []
    for pk, at in due:
        if Delivery.objects.filter(pk=pk, status=DeliveryStatus.PENDING, next_attempt_at=at).update(
            next_attempt_at=now + LEASE
        ):
            claimed.append(str(pk))
    return claimed
