"""Celery tasks of the campaigns app: thin adapters over ``campaigns.services`` (idempotent)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from portal.tasks import enqueue_on_commit


@shared_task(name="campaigns.tick", ignore_result=True)
def tick(campaign_id: str) -> None:
    from campaigns.services import campaign_tick

    campaign_tick(campaign_id)


@shared_task(name="campaigns.switch_finished", ignore_result=True)
def switch_finished(switch_id: str, state: str) -> None:
    from campaigns.services import on_switch_finished as record

    record(switch_id, state)


@shared_task(name="campaigns.tick_all", ignore_result=True)
def tick_all() -> None:
    """Beat: tick running campaigns more often than the jobs sweeper does (rate-limited starts)."""
    from campaigns.services import campaign_sweep

    campaign_sweep()


def on_switch_finished(switch_id: Any, state: str) -> None:
    """``switches.hooks`` listener: a switch ended; if it belongs to a campaign, tick it in a worker.
    One indexed query decides, so switches outside any campaign cost no task."""
    from campaigns.services import campaign_of_switch

    if campaign_of_switch(switch_id) is not None:
        enqueue_on_commit(switch_finished, args=[str(switch_id), state])


def sweep(now: Any) -> dict[str, int]:
    from campaigns.services import campaign_sweep

    return campaign_sweep(now)
