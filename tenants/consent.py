"""Consent: the subscriber in control of who may put what on their device (issue 6 part 1).

Lifecycle (only this module changes ``Consent.status``, each time by compare-and-set, audited in
the same transaction, with a live event to both organisations on commit)::

    consent_request (provider)  ->  pending
    consent_decide  (subscriber) -> granted | denied
    consent_revoke  (subscriber) -> revoked
    consent_expire_due (sweeper) -> expired

Effects on jobs (``jobs.consent_gate``): a granted consent releases the provider's jobs waiting
in ``awaiting_consent`` that it covers; a denial ends them ``rejected`` at once. Revocation and
expiry end the provider's unfinished work it covered (``rejected``) and start the removal of the
provider's security domain from the device: a ``delete_security_domain`` job (or ``lock`` when
the provider's contract for the device says so), requested by the SE issuer's side — the ISD's
keys are the issuer's — and visible to the subscriber like every job on their device.

Receipts: ``consent_receipt`` returns a JSON document signed with the platform's Ed25519 key
(``ReceiptSigningKey``, its private half wrapped by the vault's master key). The signature covers
the canonical JSON of ``receipt`` (keys sorted, ``","``/``":"`` separators, ASCII); the public key
is served at ``/api/v1/consent-receipts/key/``; ``receipt_verify`` is the reference check.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.models import AuditEvent, AuditTag
from audit.services import audit_record
from portal.errors import DomainError
from portal.events import publish
from tenants.access import Action, Actor, require
from tenants.errors import ConsentNotActive, ConsentNotPending, InvalidConsent, NotTheSubscriber
from tenants.models import Consent, ConsentStatus, Contract, MemberRole, ReceiptSigningKey

AID_RE = re.compile(r"^(?:[0-9A-F]{2}){5,16}$")
MAX_DURATION_DAYS = 3650


@dataclass(frozen=True)
class Scope:
    """What a scope lets the provider do or see, and what it does not, in everyday words."""

    will: str
    will_not: str


# The scopes a provider may ask for, and the sentences the subscriber reads (pages and receipts).
SCOPES: dict[str, Scope] = {
    "own_security_domain": Scope(
        "keep its own locked area (a security domain) on your device, with its own keys",
        "open or change anything outside its own locked area",
    ),
    "install_application": Scope(
        "install and update its own application inside that area",
        "install applications anywhere else on your device",
    ),
    "readings": Scope(
        "see the readings its application takes (for example your energy use)",
        "see readings taken by other providers' applications",
    ),
    "driving_data": Scope(
        "see the driving data its application records (distance, speed and times)",
        "see your driving data",
    ),
    "health_data": Scope(
        "see the health measurements its application sends",
        "see your health measurements",
    ),
    "device_status": Scope(
        "see whether your device is online and working",
        "see whether your device is online",
    ),
    "location": Scope("see where your device is", "see where your device is"),
}
# True whatever the scopes: said on every request and receipt.
ALWAYS_NOT = (
    "see or use the keys or data of any other provider on your device",
    "keep anything on your device after you withdraw this consent or it ends: it is removed",
)


def _publish(consent: Consent, **extra: Any) -> None:
    """A live event to both organisations (sent on commit by ``publish``; its listeners, e.g.
    webhook deliveries, run now, inside the change's transaction). No key material, ever."""
    event = {
        "kind": "consent",
        "event": "requested" if consent.status == ConsentStatus.PENDING else str(consent.status),
        "consent": str(consent.id),
        "status": consent.status,
        "subscriber": consent.subscriber.slug,
        "provider": consent.grantee.slug,
        "device": str(consent.device_id),
        **extra,
    }
    publish({consent.subscriber_id, consent.grantee_id}, event)


def _audit(actor: Actor | None, tag: AuditTag, consent: Consent, **details: Any) -> None:
    audit_record(
        actor=actor,
        tag=tag,
        target=consent,
        details={"status": consent.status, "device": consent.device.serial, **details},
        concerns=[consent.subscriber_id, consent.grantee_id],
    )


def _aid(value: Any, field: str, *, required: bool) -> str:
    if value in (None, "") and not required:
        return ""
    if not isinstance(value, str) or not AID_RE.match(value.upper()):
        raise InvalidConsent(f"{field} must be an AID of 5–16 bytes in hex.", fields={field: ["invalid"]})
    return value.upper()


# --- plain language -------------------------------------------------------------------------


def consent_plain(consent: Consent) -> dict[str, Any]:
    """Who, what, why, for how long, what the provider will and will not be able to do or see."""
    granted = [s for s in consent.scopes if s in SCOPES]
    what = f"its security domain {consent.sd_aid}" if consent.sd_aid else "its own area on your device"
    if consent.application_aid:
        what += f" and its application {consent.application_aid}"
    if consent.duration_days:
        how_long = f"{consent.duration_days} day{'s' if consent.duration_days != 1 else ''}"
    else:
        how_long = "until you withdraw it"
    return {
        "who": consent.grantee.name,
        "what": what,
        "why": consent.purpose,
        "how_long": how_long,
        "device": consent.device.serial,
        "will": [SCOPES[s].will for s in granted],
        "will_not": [SCOPES[s].will_not for s in SCOPES if s not in granted] + list(ALWAYS_NOT),
    }


# --- the lifecycle --------------------------------------------------------------------------


def _device_for_request(actor: Actor, device_serial: Any) -> Any:
    """A device the provider may ask about: one it sees, or one its contract names. Anything else
    answers as if it did not exist."""
    from devices.models import Device

    if not isinstance(device_serial, str) or not 0 < len(device_serial) <= 64:
        raise InvalidConsent("device must be the device's serial number.", fields={"device": ["invalid"]})
    from tenants.access import visible_to

    seen = visible_to(Device, actor, Action.DEVICES_VIEW).values("pk")
    contracted = Contract.objects.filter(provider=actor.subject).values("device_id")
    device = (
        Device.objects.filter(Q(pk__in=seen) | Q(pk__in=contracted), serial=device_serial)
        .select_related("subscriber")
        .first()
    )
    if device is None:
        from portal.errors import NotFoundError

        raise NotFoundError("No such device.", fields={"device": ["not found"]})
    return device


def consent_request(
    *,
    actor: Actor,
    device: Any,
    purpose: str,
    scopes: list[str],
    duration_days: int | None,
    sd_aid: str,
    application_aid: str = "",
) -> Consent:
    """A provider asks the device's subscriber for consent.

    ``device`` is a Device or its serial (resolved among the devices the provider sees or has a
    contract for; else 404). Preconditions: the device has a subscriber other than the actor; the
    purpose, scopes, duration and AIDs are well formed; no request of the same provider for the
    same SD is pending. Effects: a ``pending`` consent, a ``consent:request`` audit event, a live
    event to both organisations.
    """
    require(actor, Action.CONSENTS_MANAGE)
    if isinstance(device, str):
        device = _device_for_request(actor, device)
    if not isinstance(purpose, str) or not purpose.strip() or len(purpose) > 200:
        raise InvalidConsent("purpose must be 1–200 characters.", fields={"purpose": ["invalid"]})
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(s, str) for s in scopes)
        or not set(scopes) <= set(SCOPES)
    ):
        raise InvalidConsent(
            f"scopes must be a non-empty list of: {', '.join(SCOPES)}.", fields={"scopes": ["invalid"]}
        )
    if duration_days is not None and (
        isinstance(duration_days, bool)
        or not isinstance(duration_days, int)
        or not 1 <= duration_days <= MAX_DURATION_DAYS
    ):
        raise InvalidConsent(
            f"duration_days must be a whole number of days from 1 to {MAX_DURATION_DAYS}, or null.",
            fields={"duration_days": ["invalid"]},
        )
    sd = _aid(sd_aid, "sd_aid", required=True)
    app = _aid(application_aid, "application_aid", required=False)
    subscriber = device.subscriber
    if subscriber is None:
        raise InvalidConsent("This device has no subscriber: nobody's consent is needed.")
    if subscriber.pk == actor.subject.pk:
        raise InvalidConsent("You are this device's subscriber: you need nobody's consent.")
    with transaction.atomic():
        if Consent.objects.filter(
            device=device, grantee=actor.subject, sd_aid=sd, status=ConsentStatus.PENDING
        ).exists():
            raise ConsentNotPending(
                "A request of yours for this security domain is already waiting for the subscriber."
            )
        now = timezone.now()
        consent = Consent.objects.create(
            subscriber=subscriber,
            grantee=actor.subject,
            device=device,
            purpose=purpose.strip(),
            scopes=sorted(set(scopes)),
            status=ConsentStatus.PENDING,
            sd_aid=sd,
            application_aid=app,
            duration_days=duration_days,
            requested_at=now,
            requested_by_user=actor.user if getattr(actor.user, "is_authenticated", False) else None,
            granted_at=None,
        )
        _audit(actor, AuditTag.CONSENT_REQUEST, consent, sd=sd, scopes=consent.scopes)
        _publish(consent)
    return consent


def _require_subscriber(actor: Actor, consent: Consent) -> None:
    require(actor, Action.CONSENTS_MANAGE)
    if actor.subject.pk != consent.subscriber_id:
        raise NotTheSubscriber("Only the device's subscriber decides on this consent.")


def _cas(consent: Consent, source: str, **values: Any) -> bool:
    done = Consent.objects.filter(pk=consent.pk, status=source).update(**values)
    if done:
        consent.refresh_from_db()
    return bool(done)


def _waiting_jobs(consent: Consent, states: Any) -> list[Any]:
    from jobs.consent_gate import CONSENT_KINDS, consent_covers
    from jobs.models import Job

    jobs = Job.objects.select_for_update().filter(
        device_id=consent.device_id,
        beneficiary_id=consent.grantee_id,
        kind__in=CONSENT_KINDS,
        state__in=states,
    )
    return [j for j in jobs if consent_covers(consent, kind=j.kind, params=j.params, target_aid=j.target_aid)]


def consent_decide(*, actor: Actor, consent: Consent, approve: bool) -> Consent:
    """The subscriber answers a pending request.

    Approve: ``granted`` from now for ``duration_days``; the provider's jobs waiting for it go to
    ``queued`` (fresh no-show deadline) and run. Deny: ``denied``; those jobs end ``rejected`` at
    once. Anything but a pending request: :class:`ConsentNotPending`."""
    from jobs.models import JobState
    from jobs.services import job_transition
    from jobs.tasks import enqueue_advance

    _require_subscriber(actor, consent)
    if not isinstance(approve, bool):
        raise InvalidConsent("approve must be true or false.", fields={"approve": ["invalid"]})
    now = timezone.now()
    with transaction.atomic():
        if approve:
            expires = now + timedelta(days=consent.duration_days) if consent.duration_days else None
            changed = _cas(
                consent,
                ConsentStatus.PENDING,
                status=ConsentStatus.GRANTED,
                decided_at=now,
                granted_at=now,
                expires_at=expires,
            )
        else:
            changed = _cas(consent, ConsentStatus.PENDING, status=ConsentStatus.DENIED, decided_at=now)
        if not changed:
            consent.refresh_from_db()
            raise ConsentNotPending(f"This request was already answered ({consent.get_status_display()}).")
        released = []
        for job in _waiting_jobs(consent, [JobState.AWAITING_CONSENT]):
            if approve:
                from django.conf import settings

                if job_transition(
                    job=job,
                    to=JobState.QUEUED,
                    actor=actor,
                    reason="the subscriber gave consent",
                    no_show_deadline=now + timedelta(seconds=settings.TESSERA_JOB_NO_SHOW_SECONDS),
                ):
                    enqueue_advance(job.id)
                    released.append(str(job.id))
            elif job_transition(
                job=job,
                to=JobState.REJECTED,
                actor=actor,
                reason="the subscriber refused consent",
                error_code="consent_denied",
            ):
                released.append(str(job.id))
        tag = AuditTag.CONSENT_GRANT if approve else AuditTag.CONSENT_DENY
        _audit(
            actor,
            tag,
            consent,
            jobs=released,
            expires_at=consent.expires_at.isoformat() if consent.expires_at else None,
        )
        _publish(consent)
    return consent


def consent_revoke(*, actor: Actor, consent: Consent) -> Consent:
    """The subscriber withdraws a granted consent: ``revoked``, the provider's unfinished work it
    covered ends ``rejected``, and the removal of its security domain starts (see module doc)."""
    _require_subscriber(actor, consent)
    now = timezone.now()
    with transaction.atomic():
        if not _cas(consent, ConsentStatus.GRANTED, status=ConsentStatus.REVOKED, revoked_at=now):
            consent.refresh_from_db()
            raise ConsentNotActive(
                f"Only an allowed consent can be withdrawn (this one: {consent.get_status_display()})."
            )
        ended = _end_work(consent, "the subscriber withdrew consent")
        removal = _start_removal(consent)
        _audit(actor, AuditTag.CONSENT_REVOKE, consent, jobs=ended, removal=removal)
        _publish(consent, removal=removal)
    return consent


def consent_expire_due(now: Any = None) -> int:
    """The sweeper's part: granted consents past ``expires_at`` become ``expired``, with the same
    effects as a revocation. Returns how many expired."""
    now = now or timezone.now()
    count = 0
    due = Consent.objects.filter(status=ConsentStatus.GRANTED, expires_at__lte=now).values_list(
        "pk", flat=True
    )
    for pk in list(due):
        with transaction.atomic():
            consent = Consent.objects.select_related("device", "subscriber", "grantee").get(pk=pk)
            if not _cas(consent, ConsentStatus.GRANTED, status=ConsentStatus.EXPIRED):
                continue
            ended = _end_work(consent, "the subscriber's consent ran out")
            removal = _start_removal(consent)
            _audit(None, AuditTag.CONSENT_EXPIRE, consent, jobs=ended, removal=removal)
            _publish(consent, removal=removal)
            count += 1
    return count


def _end_work(consent: Consent, reason: str) -> list[str]:
    """End the provider's unfinished jobs this consent covered (awaiting input: failed)."""
    from jobs.models import JobState
    from jobs.services import job_transition

    ended = []
    states = [
        JobState.AWAITING_CONSENT,
        JobState.QUEUED,
        JobState.DISPATCHED,
        JobState.RUNNING,
        JobState.AWAITING_INPUT,
    ]
    for job in _waiting_jobs(consent, states):
        to = JobState.FAILED if job.state == JobState.AWAITING_INPUT else JobState.REJECTED
        if job_transition(job=job, to=to, reason=reason, error_code="consent_ended"):
            ended.append(str(job.id))
    return ended


def _start_removal(consent: Consent) -> list[str]:
    """Request the removal (or lock, per the contract) of the provider's SD(s) this consent
    covered, as the SE issuer — whose ISD keys open the session. Returns the job ids; a removal
    that cannot start now (device suspended, another job on that SD) is audited, not raised."""
    from devices.models import SecurityDomain
    from jobs.models import JobKind
    from jobs.services import job_request

    device = consent.device
    sds = SecurityDomain.objects.filter(
        secure_element__device=device, owner_id=consent.grantee_id, is_isd=False
    ).select_related("secure_element__issuer")
    if consent.sd_aid:
        sds = sds.filter(aid=consent.sd_aid)
    still_covered = Consent.objects.filter(
        Consent.active_q(), device=device, grantee_id=consent.grantee_id
    ).exclude(pk=consent.pk)
    contract = (
        Contract.objects.filter(
            subscriber_id=consent.subscriber_id, provider_id=consent.grantee_id, device=device
        )
        .order_by("-starts_at")
        .first()
    )
    kind = (
        JobKind.LOCK
        if contract is not None and contract.on_consent_end == "lock"
        else JobKind.DELETE_SECURITY_DOMAIN
    )
    started: list[str] = []
    for sd in sds:
        if any(not c.sd_aid or c.sd_aid == sd.aid for c in still_covered):
            continue  # another consent of the subscriber still covers this SD
        issuer_side = Actor(user=None, org=sd.secure_element.issuer, member_role=MemberRole.OWNER)
        try:
            with transaction.atomic():
                job = job_request(actor=issuer_side, device=device, kind=kind, params={"aid": sd.aid})
        except DomainError as exc:
            audit_record(
                actor=None,
                tag=AuditTag.CONSENT_EXPIRE
                if consent.status == ConsentStatus.EXPIRED
                else AuditTag.CONSENT_REVOKE,
                target=consent,
                details={"removal_not_started": sd.aid, "reason": str(exc)[:200]},
                concerns=[consent.subscriber_id, consent.grantee_id],
            )
            continue
        started.append(str(job.id))
    if started:
        Consent.objects.filter(pk=consent.pk).update(removal_job_id=started[0])
        consent.removal_job_id = started[0]
    return started


# --- history and receipts -------------------------------------------------------------------


def consent_history(consent: Consent) -> list[AuditEvent]:
    """The audit events of this consent, oldest first."""
    return list(
        AuditEvent.objects.filter(target_type=Consent._meta.label_lower, target_id=str(consent.pk)).order_by(
            "seq"
        )
    )


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_aad(key_id: Any) -> bytes:
    import uuid

    return b"tessera:consent-receipt-key\x00" + uuid.UUID(str(key_id)).bytes


def receipt_signing_key() -> ReceiptSigningKey:
    """The current receipt key; made on first use (private half wrapped by the master key)."""
    from keys.vault import master_key_backend

    key = ReceiptSigningKey.objects.filter(retired_at__isnull=True).first()
    if key is not None:
        return key
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    backend = master_key_backend()
    row = ReceiptSigningKey(
        public_raw=private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ),
        master_key_id=backend.key_id,
    )
    row.wrapped = backend.wrap(raw, aad=_key_aad(row.id))
    del private, raw
    row.save()
    return row


def receipt_public_key(key_id: str | None = None) -> dict[str, str]:
    """The current receipt key, or (``key_id``) the one named by an older receipt."""
    key = receipt_signing_key()
    if key_id and key_id != str(key.id):
        import uuid

        try:
            older = ReceiptSigningKey.objects.filter(pk=uuid.UUID(key_id)).first()
        except ValueError:
            older = None
        if older is None:
            from portal.errors import NotFoundError

            raise NotFoundError("No such receipt key.")
        key = older
    public = Ed25519PublicKey.from_public_bytes(bytes(key.public_raw))
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "alg": "Ed25519",
        "key_id": str(key.id),
        "public_key": _b64(bytes(key.public_raw)),
        "pem": pem.decode(),
    }


def consent_receipt(*, actor: Actor, consent: Consent) -> dict[str, Any]:
    """A signed record of the consent as it stands, with its history (for its subscriber or grantee)."""
    from keys.vault import _backend_named  # the vault's own lookup of a master key by id

    require(actor, Action.CONSENTS_VIEW)
    if actor.subject.pk not in (consent.subscriber_id, consent.grantee_id):
        from portal.errors import NotFoundError

        raise NotFoundError("No such consent.")
    plain = consent_plain(consent)
    receipt = {
        "type": "tessera.consent-receipt.v1",
        "consent": str(consent.id),
        "issued_at": timezone.now().isoformat(),
        "subscriber": {"slug": consent.subscriber.slug, "name": consent.subscriber.name},
        "provider": {"slug": consent.grantee.slug, "name": consent.grantee.name},
        "device": consent.device.serial,
        "purpose": consent.purpose,
        "scopes": list(consent.scopes),
        "sd_aid": consent.sd_aid,
        "application_aid": consent.application_aid,
        "status": consent.status,
        "requested_at": consent.requested_at.isoformat(),
        "decided_at": consent.decided_at.isoformat() if consent.decided_at else None,
        "granted_at": consent.granted_at.isoformat() if consent.granted_at else None,
        "expires_at": consent.expires_at.isoformat() if consent.expires_at else None,
        "revoked_at": consent.revoked_at.isoformat() if consent.revoked_at else None,
        "will": plain["will"],
        "will_not": plain["will_not"],
        "history": [
            {"seq": e.seq, "at": e.created_at.isoformat(), "event": e.tag, "hash": e.hash}
            for e in consent_history(consent)
        ],
    }
    key = receipt_signing_key()
    backend = _backend_named(key.master_key_id)
    if backend is None:  # pragma: no cover - the master key moved without a rewrap of this key
        raise ConsentNotActive("The receipt key is wrapped by a master key this server does not hold.")
    raw = backend.unwrap(bytes(key.wrapped), aad=_key_aad(key.id))
    try:
        signature = Ed25519PrivateKey.from_private_bytes(raw).sign(_canonical(receipt))
    finally:
        del raw
    return {"receipt": receipt, "alg": "Ed25519", "key_id": str(key.id), "signature": _b64(signature)}


def receipt_verify(document: Any, public_key: bytes) -> bool:
    """Reference verification: True when ``document['signature']`` is the Ed25519 signature of the
    canonical JSON of ``document['receipt']`` under ``public_key`` (32 raw bytes)."""
    try:
        signature = _unb64(document["signature"])
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, _canonical(document["receipt"]))
    except (InvalidSignature, KeyError, TypeError, ValueError):
        return False
    return True
