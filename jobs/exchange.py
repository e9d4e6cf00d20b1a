"""The agent exchange (DESIGN §8, docs/agent-protocol.md): record what the agent reports, hand it
the next work items.

Idle polls are answered from the cache alone: the device's identity (``devices.identity``), the
nonce store and the per-device "has work" marker (``jobs.engine.has_work_key``). The marker is
cleared *before* the ready steps are read, and the engine sets it *after* its transaction
commits, so no wake-up is lost between the two.
"""

from __future__ import annotations

import random
import time
from datetime import UTC
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from agent.protocol import KIND_APDU_SCRIPT, Command, ExchangeRequest, ExchangeResponse, WorkItem, WorkResult
from audit.models import AuditTag
from audit.services import audit_record
from jobs.consent_gate import consent_gate
from jobs.engine import has_work_key
from jobs.models import TERMINAL_STATES, Job, JobKind, JobState, JobStep, StepState
from jobs.services import job_audience, job_transition

REPORTABLE = (StepState.DISPATCHED, StepState.SUPERSEDED)


def poll_delay() -> float:
    base = float(settings.TESSERA_AGENT_POLL_SECONDS)
    return round(base * random.uniform(0.9, 1.1), 3)  # noqa: S311 - jitter, not crypto


def _last_seen_key(device_id: Any) -> str:
    return f"tessera:agent:lastseen:{device_id}"


def touch_last_seen(device_id: str) -> None:
    cache.set(_last_seen_key(device_id), time.time(), timeout=None)


def record_results(device_id: str, results: tuple[WorkResult, ...]) -> list[str]:
    """Store each result once (idempotent per item) and queue its interpretation. Returns acks."""
    from jobs.tasks import enqueue_process

    acks: list[str] = []
    for result in results:
        with transaction.atomic():
            step = (
                JobStep.objects.select_for_update(of=("self",))
                .select_related("job")
                .filter(item_id=result.item, job__device_id=device_id)
                .first()
            )
            acks.append(result.item)  # unknown or already recorded: acknowledged, never re-sent
            if step is None or step.state not in REPORTABLE or step.report_status:
                continue
            step.state = StepState.REPORTED
            step.report_status = result.status
            step.report_detail = result.detail[:1000]
            step.responses = [r.hex() for r in result.responses]
            step.reported_at = timezone.now()
            step.save(update_fields=["state", "report_status", "report_detail", "responses", "reported_at"])
            job = step.job
            if job.state == JobState.DISPATCHED:
                job_transition(job=job, to=JobState.RUNNING)
            audit_record(
                actor=None,
                tag=AuditTag.JOB_STEP,
                target=job,
                details={
                    "step": step.name,
                    "item": step.item_id,
                    "status": result.status,
                    "responses": len(result.responses),
                },
                concerns=job_audience(job),
            )
            step_id = step.pk
            transaction.on_commit(lambda sid=step_id: enqueue_process(sid))
    return acks


def session_holder(device_id: Any) -> Any:
    """The job that holds the device's card session, if any: a ``load_keys_scp11`` job whose
    round 1 was handed out and which has not ended. Its two rounds share one SCP11 session on the
    card, so no other job's work may reach the device until it ends (success, failure, cancel,
    input timeout: ``jobs.services`` wakes the device then)."""
    return (
        JobStep.objects.filter(
            job__device_id=device_id, job__kind=JobKind.LOAD_KEYS_SCP11, dispatched_at__isnull=False
        )
        .exclude(job__state__in=TERMINAL_STATES)
        .values_list("job_id", flat=True)
        .first()
    )


def collect_work(device_id: str, *, limit: int = 8) -> list[WorkItem]:
    """Dispatch the device's ready steps (compare-and-set READY → DISPATCHED); while a job holds
    the card session (:func:`session_holder`) only its own steps."""
    cache.delete(has_work_key(device_id))
    items: list[WorkItem] = []
    steps = list(
        JobStep.objects.select_related("job__device", "job__secure_element")
        .filter(job__device_id=device_id, state=StepState.READY)
        .order_by("created_at", "id")[:limit]
    )
    holder = session_holder(device_id) if steps else None
    for step in steps:
        if holder is not None and step.job_id != holder:
            continue  # stays READY; released when the holder ends
        with transaction.atomic():
            if not consent_gate(step.job):
                continue  # consent gone: the job ended rejected and this step was superseded
            now = timezone.now()
            if not JobStep.objects.filter(pk=step.pk, state=StepState.READY).update(
                state=StepState.DISPATCHED, dispatched_at=now
            ):
                continue
            job: Job = step.job
            if job.kind == JobKind.LOAD_KEYS_SCP11:
                holder = job.id  # the rest of this answer is its alone
            if job.state == JobState.QUEUED:
                job_transition(job=job, to=JobState.DISPATCHED)
            items.append(
                WorkItem(
                    item=step.item_id,
                    job=str(job.id),
                    kind=str(step.session.get("kind", KIND_APDU_SCRIPT)),  # token_ops on a TEE
                    channel=int(step.session.get("channel", 0)),
                    commands=tuple(
                        Command(apdu=bytes.fromhex(c["apdu"]), expect=tuple(c["expect"]))
                        for c in step.commands
                    ),
                    deadline=step.deadline.isoformat() if step.deadline else None,
                )
            )
    if len(steps) == limit:
        cache.set(has_work_key(device_id), 1, timeout=None)  # more than one answer's worth
    return items


def hold_seconds(request: ExchangeRequest) -> float:
    """How long an exchange that found no work may be held open for work about to appear.

    After results (work is flowing: the next step is being compiled) up to
    ``TESSERA_AGENT_HOLD_MS``; an agent that asked to ``wait`` (long poll) up to that, capped by
    ``TESSERA_AGENT_LONG_POLL_SECONDS`` (0 turns long polling off)."""
    held = settings.TESSERA_AGENT_HOLD_MS / 1000 if request.results else 0.0
    if request.wait:
        held = max(held, min(request.wait, float(settings.TESSERA_AGENT_LONG_POLL_SECONDS)))
    return held


def exchange(device_id: str, request: ExchangeRequest) -> tuple[ExchangeResponse, float]:
    """One exchange. Returns the answer and how long it may be held for work (``hold_seconds``)
    when none is ready yet (0 when there is work or nothing to wait for)."""
    touch_last_seen(device_id)
    acks: list[str] = []
    if request.results:
        acks = record_results(device_id, request.results)
    work: list[WorkItem] = []
    if cache.get(has_work_key(device_id)):
        work = collect_work(device_id)
    response = ExchangeResponse(acks=tuple(acks), work=tuple(work), poll_after=0.0 if work else poll_delay())
    return response, 0.0 if work else hold_seconds(request)


def flush_last_seen(device_ids: list[Any]) -> int:
    """Copy last-seen times from the cache to the database (periodic, off the poll path)."""
    from datetime import datetime

    from devices.models import Device

    keys = {_last_seen_key(d): d for d in device_ids}
    found = cache.get_many(list(keys))
    for key, ts in found.items():
        Device.objects.filter(pk=keys[key]).update(last_seen_at=datetime.fromtimestamp(ts, tz=UTC))
    return len(found)
