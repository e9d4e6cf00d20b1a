"""Reads of campaigns, through the access rule (404 for what is not yours)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from campaigns.access import VIEW, require_campaigns
from campaigns.models import Campaign, CampaignTarget
from tenants.access import Actor, get_visible, visible_to


def campaign_list(*, actor: Actor) -> QuerySet[Campaign]:
    require_campaigns(actor, VIEW)
    return (
        visible_to(Campaign, actor, VIEW)
        .select_related("owner", "new_provider")
        .order_by("-created_at", "id")
    )


def campaign_get(*, actor: Actor, pk: Any) -> Campaign:
    require_campaigns(actor, VIEW)
    return get_visible(Campaign, actor, VIEW, pk=pk)


def target_list(*, actor: Actor, campaign: Campaign, state: str | None = None) -> QuerySet[CampaignTarget]:
    qs = (
        visible_to(CampaignTarget, actor, VIEW)
        .filter(campaign=campaign)
        .select_related("device")
        .order_by("group", "position", "id")
    )
    return qs.filter(state=state) if state else qs
