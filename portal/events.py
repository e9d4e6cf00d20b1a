"""Publishing live events to organisations' channel groups, after the transaction commits."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def org_group(org_id: Any) -> str:
    return f"org.{org_id}"


def publish(org_ids: Iterable[Any], event: dict[str, Any]) -> None:
    """Send ``event`` to each organisation's group once the current transaction has committed.

    A broken channel layer must not fail the business operation that already committed: the
    event is lost for live viewers (the page shows it on reload) and the failure is logged.
    """
    targets = sorted({str(o) for o in org_ids})

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        for org_id in targets:
            try:
                async_to_sync(layer.group_send)(org_group(org_id), {"type": "org.event", "event": event})
            except Exception:  # noqa: BLE001 - see docstring
                log.warning("live event not delivered to org %s", org_id, exc_info=True)

    transaction.on_commit(send)
