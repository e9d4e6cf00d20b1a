"""Pages of the jobs app: the jobs an organisation may see, one job's progress, requesting a job
from a device's page and canceling one.

Adapters only: resolve the job or device through ``get_visible``, call one service, then redirect
(or, for htmx, return the changed fragment). A service's domain error is shown on the page with the
status it carries (400, 403, 409), never as a 500. Steps show their status words and command
counts, never APDU bytes. Progress is live: ``jobs/jobs.js`` turns each job event of the
organisation's stream into an htmx GET of the fragment that shows it (``…/timeline/`` for a job,
``devices/<pk>/jobs/`` for a device).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Device
from jobs import selectors, services
from jobs.forms import JobRequestForm
from jobs.models import Job, JobState, JobStep, StepState
from jobs.steps import plan_for
from portal.errors import DomainError
from portal.views import OrgScopedView, is_htmx
from tenants.access import Action, Actor, get_visible, visible_to
from tenants.forms import apply_domain_error

DEVICE_RECENT_JOBS = 10


def ws_path(actor: Actor) -> str:
    """The acting organisation's own event stream (job events reach the requester's group, so a
    TSM acting on someone's behalf follows the jobs it asked for)."""
    return f"/ws/o/{actor.org.slug}/events/"


def may_cancel(actor: Actor, job: Job) -> bool:
    """Whether to offer the Cancel button; ``services.job_cancel`` decides (same parties)."""
    parties = (job.requested_by_id, job.on_behalf_of_id, job.beneficiary_id)
    return (
        not job.is_terminal
        and actor.can(Action.JOBS_REQUEST)
        and (actor.subject.pk in parties or actor.org.pk == job.requested_by_id)
    )


# --- the timeline -------------------------------------------------------------------------------


def status_words(outcome: dict[str, Any]) -> str:
    """The card's status words of one attempt, runs collapsed: ``9000 ×5 · 6A88``."""
    words = [str(w) for w in outcome.get("sw", [])]
    runs: list[list[Any]] = []
    for w in words:
        if runs and runs[-1][0] == w:
            runs[-1][1] += 1
        else:
            runs.append([w, 1])
    return " · ".join(w if n == 1 else f"{w} ×{n}" for w, n in runs)


@dataclass
class Attempt:
    """One work item of a step, as the page shows it: never its commands, only how many."""

    step: JobStep
    mode: str
    commands: int
    status_words: str
    note: str

    @classmethod
    def of(cls, step: JobStep) -> Attempt:
        outcome = step.outcome or {}
        notes = []
        if outcome.get("failed_sw"):
            notes.append(
                f"the card answered {outcome['failed_sw']} to {outcome.get('failed') or 'a command'}"
            )
        if "counter_mismatch" in outcome:
            notes.append("the card's sequence counter differed; recompiled")
        if outcome.get("error"):
            notes.append(str(outcome["error"]))
        return cls(
            step=step,
            mode=str(step.session.get("mode", "")),
            commands=len(step.commands or []),
            status_words=status_words(outcome),
            note="; ".join(notes),
        )


@dataclass
class TimelineRow:
    number: int
    name: str
    state: str  # a StepState value, or "pending" / "not_reached"
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.state == "pending":
            return "Waiting"
        if self.state == "not_reached":
            return "Not reached"
        return str(StepState(self.state).label)


def timeline(job: Job) -> list[TimelineRow]:
    """The job's planned steps, each with its attempts (retries, interactive phases, reconciling
    reads) in order."""
    steps = list(job.steps.order_by("id"))
    try:
        names = [spec.name for spec in plan_for(job.kind, job.params, "")]
    except (KeyError, ValueError):  # parameters of an older shape: show what was recorded
        names = []
    for s in steps:
        while s.index >= len(names):
            names.append(s.name)
    rows = []
    for i, name in enumerate(names):
        attempts = [Attempt.of(s) for s in steps if s.index == i]
        if any(a.step.name == name and a.step.state == StepState.COMPLETED for a in attempts):
            state = StepState.COMPLETED.value
        elif attempts:
            state = attempts[-1].step.state
        else:
            state = "not_reached" if job.is_terminal else "pending"
        rows.append(TimelineRow(number=i + 1, name=name, state=state, attempts=attempts))
    return rows


def job_params(job: Job) -> list[tuple[str, str]]:
    """The job's parameters for people: lists joined; personalisation data as its size only (its
    values belong to the application owner)."""
    out = []
    for name, value in job.params.items():
        if name == "data":
            text = f"{len(value)} DGI{'s' if len(value) != 1 else ''}"
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value) or "—"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        else:
            text = str(value)
        out.append((name, text))
    return out


# --- list and detail ------------------------------------------------------------------------------


class JobListView(OrgScopedView):
    """``/o/<org>/jobs/``: every job the organisation may see, newest first; filter by state."""

    action = Action.JOBS_VIEW
    page_size = 25

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        state = request.GET.get("state", "")
        device = request.GET.get("device", "")
        context: dict[str, Any] = {"state": state, "states": JobState.choices, "device_id": device}
        if state and state not in JobState.values:
            context["error"] = f"Unknown state '{state[:32]}'; pick one from the list."
            return self.render_page("jobs/list.html", context, status=400)
        try:
            device_id = uuid.UUID(device) if device else None
        except ValueError:
            context["error"] = "device must be a device id from the devices page."
            return self.render_page("jobs/list.html", context, status=400)
        qs = selectors.job_list(actor=self.actor, device_id=device_id, state=state or None)
        page = Paginator(qs, self.page_size).get_page(request.GET.get("page"))
        return self.render_page(
            "jobs/list.html",
            {
                **context,
                "page": page,
                "ws_path": ws_path(self.actor),
                "prev_qs": self.query(state=state, device=device, page=page.previous_page_number())
                if page.has_previous()
                else "",
                "next_qs": self.query(state=state, device=device, page=page.next_page_number())
                if page.has_next()
                else "",
            },
        )


class JobDetailView(OrgScopedView):
    """``/o/<org>/jobs/<pk>/``: what was asked, by whom, for whom, and how far it got."""

    action = Action.JOBS_VIEW

    def job(self, pk: Any) -> Job:
        return get_visible(Job, self.actor, Action.JOBS_VIEW, pk=pk)

    def live_context(self, job: Job, error: str = "") -> dict[str, Any]:
        """Everything that changes while the job runs (the ``_live.html`` fragment)."""
        events: list[AuditEvent] = []
        if self.actor.can(Action.AUDIT_VIEW):
            events = list(
                visible_to(AuditEvent, self.actor, Action.AUDIT_VIEW)
                .filter(target_type=Job._meta.label_lower, target_id=str(job.pk))
                .order_by("seq")
            )
        rows = timeline(job)
        return {
            "job": job,
            "timeline": rows,
            "step_count": len(rows),
            "events": events,
            "may_cancel": may_cancel(self.actor, job),
            "live_error": error,
        }

    def page(self, job: Job, *, error: str = "", status: int = 200) -> HttpResponse:
        return self.render_page(
            "jobs/detail.html",
            {
                **self.live_context(job),
                "params": job_params(job),
                "error": error,
                "ws_path": ws_path(self.actor),
            },
            status=status,
        )

    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        return self.page(self.job(pk))


class JobTimelineView(JobDetailView):
    """The live part of the job page alone, for htmx to swap in on each job event."""

    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        return self.render_page("jobs/_live.html", self.live_context(self.job(pk)))


class JobCancelView(JobDetailView):
    action = Action.JOBS_REQUEST

    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        return self.redirect_here(reverse("org-job", kwargs={"org": org, "pk": self.job(pk).pk}))

    def post(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        job = self.job(pk)
        try:
            services.job_cancel(actor=self.actor, job=job)
        except DomainError as exc:
            job.refresh_from_db()
            if is_htmx(request):
                return self.render_page("jobs/_live.html", self.live_context(job, exc.message), exc.status)
            return self.page(job, error=exc.message, status=exc.status)
        if is_htmx(request):
            return self.render_page("jobs/_live.html", self.live_context(job))
        messages.success(request, "The job was canceled.")
        return self.redirect_here(reverse("org-job", kwargs={"org": org, "pk": job.pk}))


# --- on the device page ---------------------------------------------------------------------------


def device_jobs_context(actor: Actor, device: Device, form: JobRequestForm | None = None) -> dict[str, Any]:
    """The device page's "Jobs" section and "Request a job" form (for ``devices.views``)."""
    context: dict[str, Any] = {}
    if actor.can(Action.JOBS_VIEW):
        context["device_jobs"] = list(
            selectors.job_list(actor=actor, device_id=device.pk)[:DEVICE_RECENT_JOBS]
        )
        context["ws_path"] = ws_path(actor)
    if actor.can(Action.JOBS_REQUEST):
        context["job_form"] = form or JobRequestForm(owner=actor.subject.slug)
    return context


class DeviceJobsView(OrgScopedView):
    """``/o/<org>/devices/<pk>/jobs/``: the device page's "Jobs" section alone (live refresh)."""

    action = Action.JOBS_VIEW

    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        return self.render_page(
            "jobs/_device_jobs.html", {"device": device, **device_jobs_context(self.actor, device)}
        )


class DeviceJobRequestView(OrgScopedView):
    """``/o/<org>/devices/<pk>/jobs/new/``: the form (also on the device page), and its post."""

    action = Action.JOBS_REQUEST

    def form_page(
        self, device: Device, form: JobRequestForm, *, error: str = "", status: int = 200
    ) -> HttpResponse:
        template = "jobs/_request_form.html" if is_htmx(self.request) else "jobs/request.html"
        context = {"device": device, "job_form": form, "form_error": error}
        return self.render_page(template, context, status=status)

    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        return self.form_page(device, JobRequestForm(owner=self.actor.subject.slug))

    def post(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        form = JobRequestForm(request.POST, owner=self.actor.subject.slug)
        if not form.is_valid():
            return self.form_page(device, form, error="Check the job form.", status=400)
        try:
            job = services.job_request(
                actor=self.actor,
                device=device,
                kind=form.cleaned_data["kind"],
                params=form.params(),
                mode=form.cleaned_data["mode"],
            )
        except DomainError as exc:
            apply_domain_error(form, form.fields_named(exc.fields), exc.message)
            return self.form_page(device, form, error=exc.message, status=exc.status)
        url = reverse("org-job", kwargs={"org": org, "pk": job.pk}) + self.query()
        messages.success(request, f"{job.get_kind_display()} requested on {device.serial}.")
        if is_htmx(request):
            response = HttpResponse(status=204)
            response["HX-Redirect"] = url
            return response
        return redirect(url)
