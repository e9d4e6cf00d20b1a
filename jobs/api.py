"""REST API of jobs: request a change on a device, follow it, cancel it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from devices.models import Device
from jobs import selectors, services
from jobs import serializers as s
from jobs.models import Job, JobState
from portal.api import ON_BEHALF_PARAM, ListMixin, NoInput, OrgScopedAPIView
from portal.errors import InvalidError
from tenants.access import Action, get_visible


class DeviceJobsView(ListMixin, OrgScopedAPIView):
    """Jobs of one device; POST requests a new one."""

    write_action = Action.JOBS_REQUEST

    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.JobOut(many=True))
    def get(self, request: Request, org: str, pk: str) -> Response:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        qs = selectors.job_list(actor=self.actor, device_id=device.pk)
        return self.paginated(request, qs, s.JobOut, subject_id=self.actor.subject.pk)

    @extend_schema(parameters=[ON_BEHALF_PARAM], request=s.JobRequestIn, responses={201: s.JobOut})
    def post(self, request: Request, org: str, pk: str) -> Response:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        data = s.JobRequestIn(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.job_request(actor=self.actor, device=device, **data.validated_data)
        ctx = self.context(request, subject_id=self.actor.subject.pk)
        return Response(s.JobOut(job, context=ctx).data, status=201)


class JobListView(ListMixin, OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.JobOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        state = request.query_params.get("state")
        if state and state not in JobState.values:
            raise InvalidError(f"state must be one of {', '.join(JobState.values)}.")
        qs = selectors.job_list(actor=self.actor, state=state)
        return self.paginated(request, qs, s.JobOut, subject_id=self.actor.subject.pk)


class JobDetailView(OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.JobDetailOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        job = get_visible(Job, self.actor, Action.JOBS_VIEW, pk=pk)
        ctx = self.context(request, subject_id=self.actor.subject.pk)
        return Response(s.JobDetailOut(job, context=ctx).data)


class JobCancelView(OrgScopedAPIView):
    write_action = Action.JOBS_REQUEST

    @extend_schema(parameters=[ON_BEHALF_PARAM], request=None, responses=s.JobOut)
    def post(self, request: Request, org: str, pk: str) -> Response:
        NoInput(data=request.data).is_valid(raise_exception=True)
        job = get_visible(Job, self.actor, Action.JOBS_VIEW, pk=pk)
        job = services.job_cancel(actor=self.actor, job=job)
        ctx = self.context(request, subject_id=self.actor.subject.pk)
        return Response(s.JobOut(job, context=ctx).data)


class JobInputView(OrgScopedAPIView):
    """POST the provider's next commands to a job awaiting input (load_keys_scp11 round 2)."""

    write_action = Action.JOBS_REQUEST

    @extend_schema(parameters=[ON_BEHALF_PARAM], request=s.JobInputIn, responses=s.JobOut)
    def post(self, request: Request, org: str, pk: str) -> Response:
        job = get_visible(Job, self.actor, Action.JOBS_VIEW, pk=pk)
        data = s.JobInputIn(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.job_input(actor=self.actor, job=job, body=dict(data.validated_data))
        ctx = self.context(request, subject_id=self.actor.subject.pk)
        return Response(s.JobOut(job, context=ctx).data)
