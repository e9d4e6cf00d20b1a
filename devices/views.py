"""Pages of the devices app: the devices an organisation may see, and one device's hardware."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse

from devices import selectors
from devices.models import Device, DeviceKind
from portal.views import OrgScopedView
from tenants.access import Action, get_visible


class DeviceListView(OrgScopedView):
    action = Action.DEVICES_VIEW
    page_size = 50

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        qs = selectors.device_list(actor=self.actor).prefetch_related("secure_elements__issuer")
        kind = request.GET.get("kind", "")
        if kind in DeviceKind.values:
            qs = qs.filter(kind=kind)
        else:
            kind = ""
        page = Paginator(qs, self.page_size).get_page(request.GET.get("page"))
        return self.render_page(
            "devices/list.html",
            {
                "page": page,
                "kind": kind,
                "kinds": DeviceKind.choices,
                "prev_qs": self.query(kind=kind, page=page.previous_page_number())
                if page.has_previous()
                else "",
                "next_qs": self.query(kind=kind, page=page.next_page_number()) if page.has_next() else "",
            },
        )


class DeviceDetailView(OrgScopedView):
    """One device, its secure element(s) and the security domain tree — only the SDs the actor
    may see (providers never see each other's SDs)."""

    action = Action.DEVICES_VIEW

    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        ses, sds_by_se = selectors.device_hardware(actor=self.actor, device=device)
        hardware = [(se, selectors.sd_tree(sds_by_se.get(se.pk, []))) for se in ses]
        return self.render_page("devices/detail.html", {"device": device, "hardware": hardware})
