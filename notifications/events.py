"""Which live events are webhook events, their type names and the subscription patterns.

A live event (``portal.events.publish``) is a dict with a ``kind``. Events of the kinds in
``FAMILIES`` become webhook events typed ``<kind>.<name>``, the name being the event's ``event``
field if it has one, else its ``state`` (``job.succeeded``, ``job.awaiting_consent``…), else
``updated``. Other kinds (``audit``…) are for live viewers only.
"""

from __future__ import annotations

import re
from typing import Any

FAMILIES = ("job", "consent", "switch", "campaign")
TEST_EVENT = "webhook.test"
ALL = "*"
MAX_PATTERNS = 20

_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def event_type(event: dict[str, Any]) -> str | None:
    """The webhook type of a live event, or None if it is not one webhooks carry."""
    kind = event.get("kind")
    if kind not in FAMILIES:
        return None
    name = event.get("event") or event.get("state") or "updated"
    name = str(name).lower()
    return f"{kind}.{name}" if _NAME.fullmatch(name) else f"{kind}.updated"


def valid_pattern(pattern: Any) -> bool:
    if not isinstance(pattern, str):
        return False
    if pattern == ALL:
        return True
    family, _, name = pattern.partition(".")
    return family in FAMILIES and (name == "*" or bool(_NAME.fullmatch(name)))


def matches(patterns: list[str], etype: str) -> bool:
    family = etype.partition(".")[0]
    return any(p == ALL or p == etype or p == f"{family}.*" for p in patterns)
