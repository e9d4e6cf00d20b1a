"""REST API of provider switches (issue 6 item 2), under ``/api/v1/orgs/<org>/switches/``.

- ``GET switches/`` — the switches the organisation may see (subscriber, issuer, requester, new
  provider; the old provider only completed ones, as ``lost``).
- ``POST switches/`` ``{"device", "new_provider", "service"?, "new_sd_aid"?, "keys_mode"?, "app"?}``
  — the subscriber (contract allows switching) or the SE issuer starts a switch: 201. 409
  ``switch_running`` while another runs on the device; 403 ``switch_not_allowed``; 400
  ``invalid_switch``; 404 for a device you do not see.
- ``GET switches/<id>/`` — one, shaped for the viewer.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import ListMixin, OrgScopedAPIView
from switches import selectors, services
from switches import serializers as s
from tenants.access import Action


class SwitchListView(ListMixin, OrgScopedAPIView):
    action = Action.CONTRACTS_VIEW
    # Starting a switch: a subscriber's consent decision or an issuer's job request — both operate
    # rights (auditors read only), never on anyone's behalf (the service checks which one applies).
    write_action = Action.CONSENTS_MANAGE

    @extend_schema(responses=s.SwitchOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        return self.paginated(request, selectors.switch_list(actor=self.actor), s.SwitchOut, actor=self.actor)

    @extend_schema(request=s.SwitchIn, responses={201: s.SwitchOut})
    def post(self, request: Request, org: str) -> Response:
        ser = s.SwitchIn(data=request.data)
        ser.is_valid(raise_exception=True)
        data = dict(ser.validated_data)
        device = selectors.device_for_switch(actor=self.actor, serial=data.pop("device"))
        switch = services.switch_request(actor=self.actor, device=device, **data)
        switch.refresh_from_db()
        out = s.SwitchOut(switch, context=self.context(request, actor=self.actor))
        return Response(out.data, status=status.HTTP_201_CREATED)


class SwitchDetailView(OrgScopedAPIView):
    action = Action.CONTRACTS_VIEW

    @extend_schema(responses=s.SwitchOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        switch = selectors.switch_get(actor=self.actor, pk=pk)
        return Response(s.SwitchOut(switch, context=self.context(request, actor=self.actor)).data)
