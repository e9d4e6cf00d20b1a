"""Publishing live events to organisations' channel groups, after the transaction commits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction

from portal.layer import group_send_many

log = logging.getLogger(__name__)


# Callbacks run by ``publish`` inside the publishing transaction (e.g. webhook deliveries, which
# must exist if and only if the change they report commits). An exception in one fails the
# operation, like any other write in its transaction.
Listener = Callable[[list[str], dict[str, Any]], Any]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    """Have ``listener(org_ids, event)`` called by every ``publish`` (once per listener)."""
    if listener not in _listeners:
        _listeners.append(listener)


def org_group(org_id: Any) -> str:
    return f"org.{org_id}"


def publish(org_ids: Iterable[Any], event: dict[str, Any]) -> None:
    """Send ``event`` to each organisation's group once the current transaction has committed.

    A broken channel layer must not fail the business operation that already committed: the
    event is lost for live viewers (the page shows it on reload) and the failure is logged.
    """
    targets = sorted({str(o) for o in org_ids})
    for listener in _listeners:
        listener(targets, event)

    def send() -> None:
        try:
            group_send_many((org_group(org_id), {"type": "org.event", "event": event}) for org_id in targets)
        except Exception:  # noqa: BLE001 - see docstring
            log.warning("live event not delivered to orgs %s", ", ".join(targets), exc_info=True)

    transaction.on_commit(send)
