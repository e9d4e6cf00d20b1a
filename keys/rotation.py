"""Which key sets need rotating (keys.policy applied to what an actor may see).

Reads only: the key sets the actor may see through ``visible_to`` (KCVs, never keys), each with
its :class:`keys.policy.Assessment` against the device's intended end of service.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from keys.models import KeySet, KeySetStatus
from keys.policy import Assessment, Status, active_policy, assess_key_set

__all__ = ["FLAGS", "TO_ROTATE", "assess_key_set", "assessed", "keysets_flagged", "keysets_to_rotate_count"]
from tenants.access import Action, Actor, visible_to

TO_ROTATE = "to_rotate"
FLAGS = (TO_ROTATE, *(s.value for s in Status))


def today() -> dt.date:
    return timezone.localdate()


def device_end_of_service(keyset: KeySet) -> dt.date | None:
    device = keyset.security_domain.secure_element.device
    return device.end_of_service if device is not None else None


def live_keysets(actor: Actor) -> QuerySet[KeySet]:
    """The actor's visible key sets still on (or going to) a card, with their SD, SE and device."""
    return (
        visible_to(KeySet, actor, Action.DEVICES_VIEW)
        .filter(status__in=[KeySetStatus.PENDING, KeySetStatus.ACTIVE, KeySetStatus.RETIRED])
        .select_related("security_domain__secure_element__device")
        .order_by("crypto_period_end", "created_at", "id")
    )


def assessed(keysets: Iterable[KeySet], on: dt.date | None = None) -> list[tuple[KeySet, Assessment | None]]:
    policy = active_policy()
    day = on or today()
    return [(ks, assess_key_set(ks, device_end_of_service(ks), day, policy)) for ks in keysets]


def matches(assessment: Assessment | None, flag: str, on: dt.date) -> bool:
    if assessment is None:
        return False
    if flag == TO_ROTATE:
        return assessment.to_rotate(on)
    return assessment.status.value == flag


def keysets_flagged(actor: Actor, flag: str, on: dt.date | None = None) -> list[KeySet]:
    """The actor's live key sets whose assessment matches ``flag`` (a :class:`Status` value, or
    ``to_rotate``: expired, too weak for the device, or due within the notice period).

    Assessed in Python (the horizons are policy data, not columns): fine for an organisation's
    few thousand key sets; a larger fleet would store the status and refresh it daily.
    """
    day = on or today()
    return [ks for ks, a in assessed(live_keysets(actor), day) if matches(a, flag, day)]


def keysets_to_rotate_count(actor: Actor) -> int:
    return len(keysets_flagged(actor, TO_ROTATE))


def annotate(keysets: Iterable[Any], end_of_service: dt.date | None) -> list[Any]:
    """Set ``.assessment`` on each key set (pages), against the given device end of service."""
    policy = active_policy()
    day = today()
    out = []
    for ks in keysets:
        ks.assessment = assess_key_set(ks, end_of_service, day, policy)
        out.append(ks)
    return out
