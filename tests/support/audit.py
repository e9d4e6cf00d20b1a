"""Helpers for asserting what the audit trail recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from audit.models import AuditEvent


def tags_since(seq: int) -> list[str]:
    return list(AuditEvent.objects.filter(seq__gt=seq).order_by("seq").values_list("tag", flat=True))


def last_seq() -> int:
    event = AuditEvent.objects.order_by("-seq").first()
    return event.seq if event else 0


class AuditBroken(RuntimeError):
    """Raised by the audit writer in tests, to prove a service's write and its audit are one unit."""


@contextmanager
def audit_fails(monkeypatch: pytest.MonkeyPatch, *modules: Any) -> Iterator[None]:
    """Make ``audit_record`` raise in each given service module (they import it by name)."""

    def broken(**kwargs: Any) -> None:
        raise AuditBroken(f"audit unavailable for {kwargs.get('tag')}")

    with monkeypatch.context() as m:
        for module in modules:
            m.setattr(module, "audit_record", broken)
        yield
