"""Reads of the jobs app, always through ``visible_to``."""

from __future__ import annotations

from typing import Any

from jobs.models import Job
from tenants.access import Action, Actor, visible_to


def job_list(*, actor: Actor, device_id: Any = None, state: str | None = None) -> Any:
    qs = visible_to(Job, actor, Action.JOBS_VIEW).select_related(
        "device", "requested_by", "on_behalf_of", "beneficiary"
    )
    if device_id is not None:
        qs = qs.filter(device_id=device_id)
    if state:
        qs = qs.filter(state=state)
    return qs.order_by("-created_at")
