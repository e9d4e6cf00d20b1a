"""Pages of campaigns under ``/o/<org>/campaigns/``: the list with a form to create one, one
campaign with its live progress (counts, a bar per group, the devices) and pause/resume/cancel
buttons. Adapters only: ``campaigns.services`` decides."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from campaigns import selectors, services
from campaigns.access import MANAGE, VIEW, mandate_covers, view_of
from campaigns.models import Campaign, CampaignState
from devices.models import DeviceKind
from portal.errors import DomainError
from portal.views import OrgScopedView, is_htmx
from switches.models import KeysMode
from tenants.models import OrgRole

_SERIALS = re.compile(r"[\s,;]+")


def ws_path(org_slug: str) -> str:
    return f"/ws/o/{org_slug}/events/"


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=120, required=False)
    new_provider = forms.SlugField(
        label="New provider", max_length=50, help_text="The short name of the provider taking over."
    )
    devices = forms.CharField(
        label="Devices",
        widget=forms.Textarea(attrs={"rows": 4}),
        required=False,
        help_text="Serial numbers, one per line (or separated by commas). Leave empty to select by "
        "the current provider below.",
    )
    old_provider = forms.SlugField(
        label="…or every device of this current provider", max_length=50, required=False
    )
    device_kind = forms.ChoiceField(
        label="Device kind", choices=[("", "Any")] + list(DeviceKind.choices), required=False
    )
    service = forms.CharField(max_length=120, required=False, help_text="Only this service's contract.")
    group_size = forms.IntegerField(
        min_value=1, max_value=10_000, required=False, help_text="Empty: one group."
    )
    success_threshold = forms.IntegerField(
        label="Success threshold (%)",
        min_value=0,
        max_value=100,
        initial=95,
        help_text="Share of a group that must switch before the next group starts.",
    )
    error_threshold = forms.IntegerField(
        label="Error threshold (%)",
        min_value=0,
        max_value=100,
        initial=5,
        help_text="Above this share of failed, rolled back or skipped devices the campaign stops.",
    )
    rate_per_minute = forms.IntegerField(
        label="Switches started per minute", min_value=1, max_value=100_000, initial=60
    )
    max_in_flight = forms.IntegerField(
        label="At most running at once", min_value=1, max_value=100_000, initial=10
    )
    keys_mode = forms.ChoiceField(choices=KeysMode.choices, initial=KeysMode.PORTAL)
    start = forms.BooleanField(label="Start at once", required=False, initial=True)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        serials = [s for s in _SERIALS.split(data.get("devices") or "") if s]
        if serials and data.get("old_provider"):
            raise forms.ValidationError("Give serial numbers or a current provider, not both.")
        if not serials and not data.get("old_provider"):
            raise forms.ValidationError("Give serial numbers or a current provider.")
        data["serials"] = serials
        return data

    def service_kwargs(self) -> dict[str, Any]:
        d = self.cleaned_data
        kwargs: dict[str, Any] = {
            "name": d.get("name") or "",
            "new_provider": d["new_provider"],
            "service": d.get("service") or None,
            "keys_mode": d["keys_mode"],
            "group_size": d.get("group_size"),
            "success_threshold": d["success_threshold"] / 100,
            "error_threshold": d["error_threshold"] / 100,
            "rate_per_minute": d["rate_per_minute"],
            "max_in_flight": d["max_in_flight"],
        }
        if d["serials"]:
            kwargs["devices"] = d["serials"]
        else:
            kwargs["filter"] = {
                k: v
                for k, v in (
                    ("old_provider", d["old_provider"]),
                    ("service", d.get("service")),
                    ("device_kind", d.get("device_kind")),
                )
                if v
            }
        return kwargs


class _CampaignPages(OrgScopedView):
    action = VIEW

    def may_manage(self, campaign: Campaign | None = None) -> bool:
        if not (mandate_covers(self.actor) and self.actor.can(MANAGE)):
            return False
        if campaign is None:
            # Creating: campaigns switch the devices whose secure elements the subject issued.
            return OrgRole.SE_ISSUER in (self.actor.subject.roles or [])
        return view_of(self.actor, campaign) == "full"

    def live_context(self, campaign: Campaign) -> dict[str, Any]:
        counts = services.campaign_counts(campaign)
        total = counts["total"] or 1
        groups = services.campaign_group_counts(campaign)
        for g in groups:
            size = g["total"] or 1
            g["done_pct"] = round(100 * (g["completed"]) / size)
            g["bad_pct"] = round(100 * (g["rolled_back"] + g["failed"] + g["skipped"]) / size)
        return {
            "campaign": campaign,
            "counts": counts,
            "done_pct": round(100 * counts["completed"] / total),
            "bad_pct": round(100 * (counts["rolled_back"] + counts["failed"] + counts["skipped"]) / total),
            "groups": groups,
            "full": view_of(self.actor, campaign) == "full",
            "may_manage": self.may_manage(campaign),
            "is_running": campaign.state == CampaignState.RUNNING,
            "is_paused": campaign.state == CampaignState.PAUSED,
            "is_draft": campaign.state == CampaignState.DRAFT,
        }

    def detail(self, campaign: Campaign, status: int = 200, **extra: Any) -> HttpResponse:
        targets = selectors.target_list(actor=self.actor, campaign=campaign)
        page = Paginator(targets, 100).get_page(self.request.GET.get("page"))
        return self.render_page(
            "campaigns/detail.html",
            {**self.live_context(campaign), "page": page, "ws_path": ws_path(self.actor.org.slug), **extra},
            status=status,
        )


class CampaignListPage(_CampaignPages):
    def page(self, form: forms.Form, status: int = 200, **extra: Any) -> HttpResponse:
        campaigns = selectors.campaign_list(actor=self.actor)
        page = Paginator(campaigns, 50).get_page(self.request.GET.get("page"))
        rows = [
            {"c": c, "counts": services.campaign_counts(c), "full": view_of(self.actor, c) == "full"}
            for c in page
        ]
        return self.render_page(
            "campaigns/list.html",
            {
                "page": page,
                "rows": rows,
                "form": form,
                "may_manage": self.may_manage(),
                "ws_path": ws_path(self.actor.org.slug),
                **extra,
            },
            status=status,
        )

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        selectors.campaign_list(actor=self.actor)
        return self.page(CampaignForm())

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        selectors.campaign_list(actor=self.actor)  # 404 on behalf without a covering mandate
        from campaigns.access import require_campaigns

        require_campaigns(self.actor, MANAGE)
        form = CampaignForm(request.POST)
        if not form.is_valid():
            return self.page(form, status=400)
        try:
            campaign = services.campaign_create(actor=self.actor, **form.service_kwargs())
            if form.cleaned_data.get("start"):
                campaign = services.campaign_start(actor=self.actor, campaign=campaign)
        except DomainError as exc:
            if exc.status in (403, 404):
                raise
            return self.page(form, status=exc.status, error=exc.message)
        return self.redirect_here(
            reverse("org-campaign", kwargs={"org": self.actor.org.slug, "pk": campaign.pk})
        )


class CampaignDetailPage(_CampaignPages):
    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        return self.detail(selectors.campaign_get(actor=self.actor, pk=pk))


class CampaignProgressPage(_CampaignPages):
    """The live fragment alone (htmx swaps it on each campaign event)."""

    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        campaign = selectors.campaign_get(actor=self.actor, pk=pk)
        return self.render_page("campaigns/_live.html", self.live_context(campaign))


class _CampaignActionPage(_CampaignPages):
    """POST start, pause, resume or cancel; answers the live fragment to htmx, else the page."""

    op = "pause"
    operations = {
        "start": services.campaign_start,
        "pause": services.campaign_pause,
        "resume": services.campaign_resume,
        "cancel": services.campaign_cancel,
    }

    def post(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        campaign = selectors.campaign_get(actor=self.actor, pk=pk)
        error = ""
        try:
            campaign = self.operations[self.op](actor=self.actor, campaign=campaign)
        except DomainError as exc:
            if exc.status in (403, 404):
                raise
            error = exc.message
        if is_htmx(request):
            ctx = {**self.live_context(campaign), "live_error": error}
            return self.render_page("campaigns/_live.html", ctx, status=409 if error else 200)
        if error:
            return self.detail(campaign, status=409, live_error=error)
        return self.redirect_here(
            reverse("org-campaign", kwargs={"org": self.actor.org.slug, "pk": campaign.pk})
        )


class CampaignStartPage(_CampaignActionPage):
    op = "start"


class CampaignPausePage(_CampaignActionPage):
    op = "pause"


class CampaignResumePage(_CampaignActionPage):
    op = "resume"


class CampaignCancelPage(_CampaignActionPage):
    op = "cancel"
