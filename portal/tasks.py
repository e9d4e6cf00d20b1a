"""Platform health tasks, and the one way to enqueue a task from a service.

Tasks are adapters (STYLE habit 3): they call a service and return plain JSON. A service that
schedules work does it with ``enqueue_on_commit`` so a rolled-back transaction never leaves a task
acting on rows that do not exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from celery import shared_task
from django.db import transaction


class Enqueueable(Protocol):
    def apply_async(self, args: Any = ..., kwargs: Any = ..., **options: Any) -> Any: ...


def enqueue_on_commit(
    task: Enqueueable,
    *,
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    using: str | None = None,
    **options: Any,
) -> None:
    """Send ``task`` once the current transaction commits; never, if it rolls back.

    Outside a transaction (autocommit) it is sent at once. ``options`` go to ``apply_async``
    (``queue``, ``task_id``, ``countdown``…).
    """
    frozen_args, frozen_kwargs = tuple(args), dict(kwargs or {})
    transaction.on_commit(
        lambda: task.apply_async(args=frozen_args, kwargs=frozen_kwargs, **options), using=using
    )


@shared_task(name="portal.ping", bind=True)
def ping(self: Any) -> dict[str, Any]:
    """Liveness of the broker and a worker: answers "pong" and who answered."""
    return {"reply": "pong", "worker": self.request.hostname}


@shared_task(name="portal.audit_verify")
def audit_verify() -> dict[str, Any]:
    """Recompute the audit hash chain in a worker (scheduled periodically in deployments)."""
    from audit.services import ChainBreak, audit_verify_chain

    try:
        return {"ok": True, "events": audit_verify_chain()}
    except ChainBreak as exc:
        return {"ok": False, "seq": exc.seq, "reason": exc.reason}
