"""Who wants to know when a job ends: orchestrations of jobs (a provider switch, a campaign) register
a listener here instead of the jobs app importing them.

``job_finished(job_id, state)`` listeners run after the transaction that ended the job commits. A
listener must be idempotent and cheap (enqueue a task): a lost call is recovered by the
orchestration's own sweeper, a repeated one must change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[Any, str], None]
_finished: list[Listener] = []


def on_job_finished(listener: Listener) -> None:
    if listener not in _finished:
        _finished.append(listener)


def job_finished(job_id: Any, state: str) -> None:
    for listener in _finished:
        try:
            listener(job_id, state)
        except Exception:  # noqa: BLE001 - the job ended; the listener's sweeper recovers
            log.warning("job-finished listener %s failed for job %s", listener, job_id, exc_info=True)


SweepListener = Callable[[Any], Any]
_sweepers: list[tuple[str, SweepListener]] = []


def on_sweep(name: str, listener: SweepListener) -> None:
    """Have ``listener(now)`` run by every ``jobs.sweeper.sweep`` (its result reported as ``name``)."""
    if all(n != name for n, _ in _sweepers):
        _sweepers.append((name, listener))


def run_sweepers(now: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, listener in _sweepers:
        try:
            out[name] = listener(now)
        except Exception:  # noqa: BLE001 - one orchestration's sweeper must not stop the others
            log.warning("sweeper %s failed", name, exc_info=True)
            out[name] = "failed"
    return out
