"""Celery tasks of the jobs app: thin adapters over ``jobs.engine`` and ``jobs.sweeper``.

Every task is idempotent: workers run with ``acks_late`` and ``reject_on_worker_lost``, so a task
whose worker died is delivered again and must change nothing the second time.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from portal.tasks import enqueue_on_commit


@shared_task(name="jobs.advance", ignore_result=True)
def advance_job(job_id: str) -> None:
    from jobs.engine import job_advance

    job_advance(job_id)


@shared_task(name="jobs.process_step", ignore_result=True)
def process_step(step_id: int) -> None:
    from jobs.engine import step_process

    step_process(step_id)


@shared_task(name="jobs.tasks.sweep", ignore_result=True)
def sweep() -> dict[str, Any]:
    from jobs.sweeper import sweep as run_sweep

    return run_sweep()


def enqueue_advance(job_id: Any, countdown: float = 0) -> None:
    options: dict[str, Any] = {"countdown": countdown} if countdown else {}
    enqueue_on_commit(advance_job, args=[str(job_id)], **options)


def enqueue_process(step_id: Any) -> None:
    enqueue_on_commit(process_step, args=[int(step_id)])
