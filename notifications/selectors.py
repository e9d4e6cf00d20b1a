"""Reads of webhooks and their delivery log, through the access module."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from notifications.access import VIEW, require_webhooks
from notifications.models import Delivery, Webhook
from tenants.access import Actor, get_visible, visible_to


def webhook_list(*, actor: Actor) -> QuerySet[Webhook]:
    require_webhooks(actor, VIEW)
    return visible_to(Webhook, actor, VIEW).order_by("created_at", "id")


def webhook_get(*, actor: Actor, pk: Any) -> Webhook:
    require_webhooks(actor, VIEW)
    return get_visible(Webhook, actor, VIEW, pk=pk)


def delivery_list(*, actor: Actor, webhook: Webhook) -> QuerySet[Delivery]:
    require_webhooks(actor, VIEW)
    return visible_to(Delivery, actor, VIEW).filter(webhook=webhook).order_by("-created_at", "id")
