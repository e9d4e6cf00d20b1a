"""Read-only REST API of devices, secure elements and security domains."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from devices import selectors
from devices import serializers as s
from devices.models import Device, SecureElement, SecurityDomain
from portal.api import ON_BEHALF_PARAM, ListMixin, OrgScopedAPIView
from tenants.access import Action, get_visible, visible_to


class DeviceListView(ListMixin, OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.DeviceOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        return self.paginated(request, selectors.device_list(actor=self.actor), s.DeviceOut)


class DeviceDetailView(OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.DeviceDetailOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        ses, sds_by_se = selectors.device_hardware(actor=self.actor, device=device)
        ctx = {"request": request, "org": org, "secure_elements": ses, "sds_by_se": sds_by_se}
        return Response(s.DeviceDetailOut(device, context=ctx).data)


class SecureElementListView(ListMixin, OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.SecureElementOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        qs = visible_to(SecureElement, self.actor, Action.DEVICES_VIEW).select_related(
            "issuer", "supplier", "device"
        )
        return self.paginated(request, qs, s.SecureElementOut)


class SecureElementDetailView(OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.SecureElementOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        se = get_visible(SecureElement, self.actor, Action.DEVICES_VIEW, pk=pk)
        return Response(s.SecureElementOut(se, context={"request": request, "org": org}).data)


class SecurityDomainListView(ListMixin, OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.SecurityDomainOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        qs = visible_to(SecurityDomain, self.actor, Action.DEVICES_VIEW).select_related("owner", "parent")
        return self.paginated(request, qs, s.SecurityDomainOut)


class SecurityDomainDetailView(OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.SecurityDomainOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        sd = get_visible(SecurityDomain, self.actor, Action.DEVICES_VIEW, pk=pk)
        return Response(s.SecurityDomainOut(sd, context={"request": request, "org": org}).data)
