"""The periodic safety net (Celery beat, every ``TESSERA_SWEEP_SECONDS``):

- timeouts as the field learned them (DESIGN §7): *no-show* (queued, never dispatched, the device
  never came back before ``no_show_deadline``), *step* (a dispatched step with no report past its
  deadline: the device took it and went silent), *overall* (``overall_deadline``), *input*
  (``awaiting_input`` past ``input_deadline``: the provider never sent round 2);
- lost wake-ups: re-enqueue jobs that should advance, reported steps not yet interpreted, and
  re-raise "has work" markers for devices with ready steps;
- consents past ``expires_at`` expire (``tenants.consent.consent_expire_due``);
- copy last-seen times from the cache to the database.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from jobs.engine import mark_has_work
from jobs.exchange import flush_last_seen
from jobs.models import ACTIVE_STATES, Job, JobState, JobStep, StepState
from jobs.services import job_transition


def sweep(now: Any = None) -> dict[str, Any]:
    from jobs.tasks import enqueue_advance, enqueue_process

    now = now or timezone.now()
    counts = {
        "no_show": 0,
        "step_timeout": 0,
        "overall": 0,
        "input_timeout": 0,
        "advanced": 0,
        "reprocessed": 0,
        "marked": 0,
    }
    # Consents past their end: expired, the provider's work ended, its SD's removal started.
    from tenants.consent import consent_expire_due

    counts["consents_expired"] = consent_expire_due(now)
    # No-show: nothing was ever handed to the device (its first step, compiled at once, is still
    # waiting for a poll that never came).
    for job in Job.objects.filter(state=JobState.QUEUED, no_show_deadline__lt=now).exclude(
        steps__dispatched_at__isnull=False
    ):
        if job_transition(
            job=job,
            to=JobState.TIMED_OUT,
            reason="the device never came back (no-show)",
            error_code="no_show",
        ):
            counts["no_show"] += 1
    stale_steps = JobStep.objects.filter(
        state=StepState.DISPATCHED, deadline__lt=now, job__state__in=ACTIVE_STATES
    )
    for step in stale_steps.select_related("job"):
        if job_transition(
            job=step.job,
            to=JobState.TIMED_OUT,
            reason=f"the device took step {step.name} and went silent",
            error_code="step_timeout",
        ):
            counts["step_timeout"] += 1
    for job in Job.objects.filter(
        state__in=[*ACTIVE_STATES, JobState.AWAITING_CONSENT], overall_deadline__lt=now
    ):
        if job_transition(
            job=job,
            to=JobState.TIMED_OUT,
            reason="the job ran past its overall deadline",
            error_code="overall_timeout",
        ):
            counts["overall"] += 1
    # Input timeout: a load_keys_scp11 job whose provider never sent round 2 (its card session is
    # released with the job).
    for job in Job.objects.filter(state=JobState.AWAITING_INPUT, input_deadline__lt=now):
        if job_transition(
            job=job,
            to=JobState.FAILED,
            reason="the provider did not send its key set before the input deadline",
            error_code="input_timeout",
        ):
            counts["input_timeout"] += 1
    # Lost wake-ups.
    idle = Job.objects.filter(state__in=ACTIVE_STATES - {JobState.AWAITING_INPUT}).filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now)
    )
    idle = idle.exclude(steps__state__in=[StepState.READY, StepState.DISPATCHED, StepState.REPORTED])
    for job_id in idle.values_list("pk", flat=True):
        enqueue_advance(job_id)
        counts["advanced"] += 1
    late = JobStep.objects.filter(state=StepState.REPORTED, reported_at__lt=now - timedelta(seconds=30))
    for step_id in late.values_list("pk", flat=True):
        enqueue_process(step_id)
        counts["reprocessed"] += 1
    for device_id in (
        JobStep.objects.filter(state=StepState.READY).values_list("job__device_id", flat=True).distinct()
    ):
        mark_has_work(device_id)
        counts["marked"] += 1
    active_devices = list(
        Job.objects.filter(state__in=ACTIVE_STATES).values_list("device_id", flat=True).distinct()
    )
    counts["last_seen"] = flush_last_seen(active_devices)
    # Orchestrations of jobs (provider switches, campaigns) recover what a lost hook left.
    from jobs.hooks import run_sweepers

    counts.update(run_sweepers(now))
    return counts
