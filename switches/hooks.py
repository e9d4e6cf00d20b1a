"""Who wants to know when a switch ends (a campaign counts its devices): listeners registered here,
called after the transaction that ended the switch commits. Idempotent and cheap, like
``jobs.hooks``; a lost call is recovered by the listener's own sweeper."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[Any, str], None]
_finished: list[Listener] = []


def on_switch_finished(listener: Listener) -> None:
    if listener not in _finished:
        _finished.append(listener)


def switch_finished(switch_id: Any, state: str) -> None:
    for listener in _finished:
        try:
            listener(switch_id, state)
        except Exception:  # noqa: BLE001 - the switch ended; the listener's sweeper recovers
            log.warning("switch-finished listener %s failed for %s", listener, switch_id, exc_info=True)
