"""Pages of webhooks under ``/o/<org>/webhooks/``: the list with a form to add one, one webhook
with its delivery log and test-send, rotate-secret, enable/disable and delete buttons. Adapters
only: ``notifications.services`` decides."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from notifications import selectors, services
from notifications.access import MANAGE, VIEW, require_webhooks
from notifications.events import ALL, FAMILIES
from notifications.models import Webhook
from portal.errors import DomainError
from portal.views import OrgScopedView

EVENT_CHOICES = [(ALL, "Every event")] + [(f"{f}.*", f"All {f} events") for f in FAMILIES]


class WebhookForm(forms.Form):
    url = forms.CharField(
        label="Receiver URL", max_length=2000, help_text="https:// — every event is POSTed there, signed."
    )
    event_types = forms.MultipleChoiceField(
        label="Events", choices=EVENT_CHOICES, widget=forms.CheckboxSelectMultiple, initial=["job.*"]
    )
    description = forms.CharField(max_length=200, required=False)


class _WebhookPages(OrgScopedView):
    action = VIEW

    def may_manage(self) -> bool:
        return self.actor.on_behalf_of is None and self.actor.can(MANAGE)

    def detail(self, webhook: Webhook, status: int = 200, **extra: Any) -> HttpResponse:
        deliveries = selectors.delivery_list(actor=self.actor, webhook=webhook)
        page = Paginator(deliveries, 50).get_page(self.request.GET.get("page"))
        return self.render_page(
            "notifications/webhook_detail.html",
            {"webhook": webhook, "page": page, "may_manage": self.may_manage(), **extra},
            status=status,
        )

    def back(self, webhook: Webhook) -> HttpResponse:
        return self.redirect_here(
            reverse("org-webhook", kwargs={"org": self.actor.org.slug, "pk": webhook.pk})
        )


class WebhookListPage(_WebhookPages):
    def page(self, form: forms.Form, status: int = 200, **extra: Any) -> HttpResponse:
        return self.render_page(
            "notifications/webhooks.html",
            {
                "webhooks": selectors.webhook_list(actor=self.actor),
                "form": form,
                "may_manage": self.may_manage(),
                **extra,
            },
            status=status,
        )

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.page(WebhookForm())

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        require_webhooks(self.actor, MANAGE)
        form = WebhookForm(request.POST)
        if not form.is_valid():
            return self.page(form, status=400)
        try:
            webhook, secret = services.webhook_create(actor=self.actor, **form.cleaned_data)
        except DomainError as exc:
            if exc.status in (403, 404):
                raise
            return self.page(form, status=exc.status, error=exc.message)
        return self.detail(webhook, status=201, secret=secret)


class WebhookDetailPage(_WebhookPages):
    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        return self.detail(selectors.webhook_get(actor=self.actor, pk=pk))


class WebhookTestPage(_WebhookPages):
    def post(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        webhook = selectors.webhook_get(actor=self.actor, pk=pk)
        services.webhook_test_send(actor=self.actor, webhook=webhook)
        return self.back(webhook)


class WebhookRotateSecretPage(_WebhookPages):
    def post(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        webhook = selectors.webhook_get(actor=self.actor, pk=pk)
        secret = services.webhook_rotate_secret(
            actor=self.actor, webhook=webhook, expire_previous=request.POST.get("expire_previous") == "1"
        )
        return self.detail(webhook, secret=secret)


class WebhookActivePage(_WebhookPages):
    """POST ``active=1|0``: enable or disable."""

    def post(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        webhook = selectors.webhook_get(actor=self.actor, pk=pk)
        services.webhook_update(actor=self.actor, webhook=webhook, active=request.POST.get("active") == "1")
        return self.back(webhook)


class WebhookDeletePage(_WebhookPages):
    def post(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        webhook = selectors.webhook_get(actor=self.actor, pk=pk)
        services.webhook_delete(actor=self.actor, webhook=webhook)
        return self.redirect_here(reverse("org-webhooks", kwargs={"org": self.actor.org.slug}))
