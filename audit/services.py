"""Writing audit events. Called by every state-changing service inside its own transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, Protocol
from uuid import UUID, uuid4

from django.db import models, transaction
from django.utils import timezone

from audit.models import AuditChainHead, AuditEvent, AuditEventOrg, AuditTag
from portal.events import publish

GENESIS_HASH = "0" * 64


class ActorLike(Protocol):
    @property
    def user(self) -> Any: ...
    @property
    def org(self) -> Any: ...
    @property
    def on_behalf_of(self) -> Any: ...


def _canonical(event: AuditEvent) -> bytes:
    payload = {
        "seq": event.seq,
        "created_at": event.created_at.isoformat(),
        "actor_user_id": event.actor_user_id,
        "actor_username": event.actor_username,
        "acting_org_id": str(event.acting_org_id) if event.acting_org_id else None,
        "on_behalf_of_id": str(event.on_behalf_of_id) if event.on_behalf_of_id else None,
        "tag": event.tag,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_repr": event.target_repr,
        "details": event.details,
        "concerned_org_ids": sorted(event.concerned_org_ids),
        "prev_hash": event.prev_hash,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(_canonical(event)).hexdigest()


def _org_id(org: Any) -> UUID | None:
    if org is None:
        return None
    return org if isinstance(org, UUID) else org.pk


def audit_record(
    *,
    actor: ActorLike | None,
    tag: AuditTag,
    target: models.Model | None = None,
    details: dict[str, Any] | None = None,
    concerns: Iterable[Any] = (),
) -> AuditEvent:
    """Append one event to the chain.

    Preconditions: called inside the transaction that makes the change it records, so the event
    exists if and only if the change does. ``actor`` is None only for the platform itself (e.g. a
    management command run by the operator). ``details`` must hold no key material.
    Effects: locks the chain head, writes the event with ``prev_hash`` = the head, moves the head.
    """
    user = getattr(actor, "user", None)
    acting = _org_id(getattr(actor, "org", None))
    behalf = _org_id(getattr(actor, "on_behalf_of", None))
    concerned = {o for o in (acting, behalf, *(_org_id(c) for c in concerns)) if o is not None}
    # No savepoint of its own: an error here must abort the change it records anyway.
    with transaction.atomic(savepoint=False):
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(
            id=1, defaults={"last_hash": GENESIS_HASH, "last_seq": 0}
        )
        event = AuditEvent(
            created_at=timezone.now(),
            actor_user=user if getattr(user, "is_authenticated", False) else None,
            actor_username=getattr(user, "username", "") or "",
            acting_org_id=acting,
            on_behalf_of_id=behalf,
            tag=str(tag),
            target_type=target._meta.label_lower if target is not None else "",
            target_id=str(target.pk) if target is not None else "",
            target_repr=str(target)[:200] if target is not None else "",
            details=details or {},
            concerned_org_ids=sorted(str(o) for o in concerned),
            prev_hash=head.last_hash,
            hash="pending-" + uuid4().hex,
        )
        event.save()
        # The hash covers seq, which exists only after the insert.
        event.hash = compute_hash(event)
        AuditEvent.objects.filter(seq=event.seq).update(hash=event.hash)
        AuditEventOrg.objects.bulk_create([AuditEventOrg(event=event, org_id=o) for o in concerned])
        head.last_hash = event.hash
        head.last_seq = event.seq
        head.save(update_fields=["last_hash", "last_seq"])
        publish(
            concerned,
            {
                "kind": "audit",
                "seq": event.seq,
                "tag": event.tag,
                "target": event.target_repr,
                "actor": event.actor_username,
                "at": event.created_at.isoformat(),
            },
        )
    return event


class ChainBreak(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"audit chain broken at event #{seq}: {reason}")
        self.seq = seq
        self.reason = reason


def audit_verify_chain(*, batch_size: int = 2000) -> int:
    """Recompute the whole chain; return the number of events checked or raise ChainBreak."""
    prev = GENESIS_HASH
    count = 0
    last_seq = 0
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=batch_size):
        if event.prev_hash != prev:
            raise ChainBreak(
                event.seq,
                "prev_hash does not match the previous event's hash (an event was removed or reordered)",
            )
        if compute_hash(event) != event.hash:
            raise ChainBreak(event.seq, "content does not match its hash (the row was edited)")
        prev = event.hash
        last_seq = event.seq
        count += 1
    head = AuditChainHead.objects.filter(id=1).first()
    if head is not None and (head.last_hash != prev or head.last_seq != last_seq):
        raise ChainBreak(
            head.last_seq, "the newest events were removed (chain head points past the last row)"
        )
    return count
