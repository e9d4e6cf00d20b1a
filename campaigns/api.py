"""REST API of switch campaigns (issue 6 item 2), under ``/api/v1/orgs/<org>/campaigns/``.

- ``GET campaigns/`` — the campaigns the organisation owns, or that move devices to it.
- ``POST campaigns/`` ``{"new_provider", "devices" | "filter" | "groups", "group_size"?,
  "service"?, "keys_mode"?, "app"?, "success_threshold"?, "error_threshold"?,
  "rate_per_minute"?, "max_in_flight"?, "name"?, "start"?}`` — the devices' SE issuer (or a TSM
  on its behalf with a mandate covering sd.create and sd.delete) creates a campaign (``draft``;
  ``running`` with ``"start": true``): 201. 400 ``invalid_campaign`` naming the field.
- ``GET campaigns/<id>/`` — counts per state and per group.
- ``POST campaigns/<id>/start|pause|resume|cancel/`` — 200 with the campaign; 409
  ``campaign_state`` when the action does not apply to its state; 403 for the new provider.
- ``GET campaigns/<id>/targets/?state=`` — the devices, paginated.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import selectors, services
from campaigns import serializers as s
from campaigns.access import MANAGE, VIEW, view_of
from campaigns.errors import CampaignInvalid
from campaigns.models import TargetState
from portal.api import ListMixin, NoInput, OrgScopedAPIView


class _CampaignView(OrgScopedAPIView):
    action = VIEW

    def out(self, request: Request, campaign: object, code: int = 200) -> Response:
        ctx = self.context(request, actor=self.actor, detail=True)
        return Response(s.CampaignOut(campaign, context=ctx).data, status=code)


class CampaignListView(ListMixin, _CampaignView):
    write_action = MANAGE

    @extend_schema(responses=s.CampaignOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        return self.paginated(
            request, selectors.campaign_list(actor=self.actor), s.CampaignOut, actor=self.actor
        )

    @extend_schema(request=s.CampaignIn, responses={201: s.CampaignOut})
    def post(self, request: Request, org: str) -> Response:
        selectors.campaign_list(actor=self.actor)  # 404 on behalf without the mandate, before input
        ser = s.CampaignIn(data=request.data)
        ser.is_valid(raise_exception=True)
        data = dict(ser.validated_data)
        start = data.pop("start", False)
        campaign = services.campaign_create(actor=self.actor, **data)
        if start:
            campaign = services.campaign_start(actor=self.actor, campaign=campaign)
        return self.out(request, campaign, status.HTTP_201_CREATED)


class CampaignDetailView(_CampaignView):
    @extend_schema(responses=s.CampaignOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        return self.out(request, selectors.campaign_get(actor=self.actor, pk=pk))


class _CampaignAction(_CampaignView):
    write_action = MANAGE
    operation = staticmethod(services.campaign_pause)

    @extend_schema(request=NoInput, responses=s.CampaignOut)
    def post(self, request: Request, org: str, pk: str) -> Response:
        campaign = selectors.campaign_get(actor=self.actor, pk=pk)
        NoInput(data=request.data).is_valid(raise_exception=True)
        return self.out(request, type(self).operation(actor=self.actor, campaign=campaign))


class CampaignStartView(_CampaignAction):
    operation = staticmethod(services.campaign_start)


class CampaignPauseView(_CampaignAction):
    operation = staticmethod(services.campaign_pause)


class CampaignResumeView(_CampaignAction):
    operation = staticmethod(services.campaign_resume)


class CampaignCancelView(_CampaignAction):
    operation = staticmethod(services.campaign_cancel)


class CampaignTargetsView(ListMixin, _CampaignView):
    @extend_schema(responses=s.TargetOut(many=True))
    def get(self, request: Request, org: str, pk: str) -> Response:
        campaign = selectors.campaign_get(actor=self.actor, pk=pk)
        state = request.query_params.get("state") or None
        if state is not None and state not in TargetState.values:
            raise CampaignInvalid(
                f"state must be one of {', '.join(TargetState.values)}.", fields={"state": ["invalid"]}
            )
        targets = selectors.target_list(actor=self.actor, campaign=campaign, state=state)
        return self.paginated(
            request, targets, s.TargetOut, actor=self.actor, view=view_of(self.actor, campaign)
        )
