"""Reads of the keys app. Lists go through ``visible_to``; ``active_keyset`` is server-internal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet

from devices.models import SecurityDomain
from keys.models import KeyCustody, KeySet, KeySetStatus
from tenants.access import Action, Actor, visible_to


def keysets_for_sd(actor: Actor, sd: SecurityDomain) -> QuerySet[KeySet]:
    """The key sets of ``sd`` the actor may see (its own, or its mandator's under a key mandate)."""
    return (
        visible_to(KeySet, actor, Action.DEVICES_VIEW)
        .filter(security_domain=sd)
        .order_by("kvn", "created_at")
    )


def keysets_by_sd(actor: Actor, sd_ids: Iterable[Any]) -> dict[Any, list[KeySet]]:
    """Visible key sets of several SDs at once, by SD id (device pages and APIs)."""
    out: dict[Any, list[KeySet]] = defaultdict(list)
    qs = visible_to(KeySet, actor, Action.DEVICES_VIEW).filter(security_domain_id__in=list(sd_ids))
    for ks in qs.order_by("kvn", "created_at"):
        out[ks.security_domain_id].append(ks)
    return dict(out)


def active_keyset(sd: SecurityDomain) -> KeySet | None:
    """The key set workers use to open a channel to ``sd``: its newest active one.

    Server-internal (workers compiling scripts): no actor, so never call it from a view. Key sets
    in the provider's custody (loaded confidentially) are never returned: Tessera has no keys for them.
    """
    return _newest_usable(security_domain=sd)


def active_keyset_at(secure_element: Any, aid: str) -> KeySet | None:
    """:func:`active_keyset` of the SD ``aid`` on ``secure_element``, in one query (the engine's
    hot path). Server-internal, like :func:`active_keyset`."""
    return _newest_usable(security_domain__secure_element=secure_element, security_domain__aid=aid)


def _newest_usable(**where: Any) -> KeySet | None:
    """The newest active key set in Tessera's custody matching ``where``."""
    return (
        KeySet.objects.filter(status=KeySetStatus.ACTIVE, custody=KeyCustody.PORTAL, **where)
        .order_by("-created_at")
        .first()
    )
