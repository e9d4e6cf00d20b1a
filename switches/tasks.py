"""Celery tasks of the switches app: thin adapters over ``switches.services`` (idempotent)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from portal.tasks import enqueue_on_commit


@shared_task(name="switches.job_finished", ignore_result=True)
def job_finished(job_id: str, switch_id: str, is_key_load: bool) -> None:
    from switches.services import on_job_finished as advance

    advance(job_id, switch_id, is_key_load)


def on_job_finished(job_id: Any, state: str) -> None:
    """``jobs.hooks`` listener: a job ended; if it belongs to a switch, advance it in a worker.
    One indexed query decides (and names the switch), so jobs outside any switch cost no task."""
    from switches.services import switch_for_finished_job

    found = switch_for_finished_job(job_id)
    if found is not None:
        switch, is_key_load = found
        enqueue_on_commit(job_finished, args=[str(job_id), str(switch.pk), is_key_load])


def sweep(now: Any) -> dict[str, int]:
    from switches.services import switch_sweep

    return switch_sweep(now)
