"""Celery tasks of notifications: adapters over ``notifications.services`` (STYLE habit 3).

Each delivery attempt is its own task with short HTTP timeouts, so one slow receiver delays no
other delivery; retries come from the periodic ``notifications.retry_due`` sweep.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="notifications.deliver", ignore_result=True)
def deliver(delivery_id: str, force: bool = False) -> str:
    from notifications.services import delivery_attempt

    return delivery_attempt(delivery_id=delivery_id, force=force)


@shared_task(name="notifications.retry_due", ignore_result=True)
def retry_due() -> dict[str, Any]:
    from notifications.services import deliveries_due

    claimed = deliveries_due()
    for pk in claimed:
        deliver.apply_async(args=[pk])
    return {"enqueued": len(claimed)}
