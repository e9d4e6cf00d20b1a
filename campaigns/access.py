"""Who sees and runs a campaign, and how much of it.

The owner (the SE issuer of the targeted devices) sees and runs its campaigns; so does a TSM acting
on its behalf under a mandate that covers creating and deleting security domains (what the switches
do on the owner's cards). The new provider sees the campaigns that move devices to it — their
progress and devices, never the old provider nor how the devices were selected. Everyone else: 404.
"""

from __future__ import annotations

from django.db.models import Q

from campaigns.models import Campaign, CampaignTarget
from portal.errors import NotFoundError
from tenants.access import Action, Actor, require, rule
from tenants.models import MandateAction

VIEW = Action.JOBS_VIEW
MANAGE = Action.JOBS_REQUEST
MANDATE_NEEDS = frozenset({MandateAction.SD_CREATE, MandateAction.SD_DELETE})

_NOTHING = Q(pk__in=[])


def mandate_covers(actor: Actor) -> bool:
    return actor.mandate is None or MANDATE_NEEDS <= set(actor.mandate.actions)


def require_campaigns(actor: Actor, action: Action) -> None:
    """On behalf without a mandate covering sd.create and sd.delete: 404, like any mandator's data."""
    if not mandate_covers(actor):
        raise NotFoundError("Not found.")
    require(actor, action)


@rule(Campaign)
def _campaign_rule(actor: Actor) -> Q:
    if not mandate_covers(actor):
        return _NOTHING
    if actor.on_behalf_of is not None:
        return Q(owner=actor.subject)
    return Q(owner=actor.subject) | Q(new_provider=actor.subject)


@rule(CampaignTarget)
def _target_rule(actor: Actor) -> Q:
    if not mandate_covers(actor):
        return _NOTHING
    if actor.on_behalf_of is not None:
        return Q(campaign__owner=actor.subject)
    return Q(campaign__owner=actor.subject) | Q(campaign__new_provider=actor.subject)


def view_of(actor: Actor, campaign: Campaign) -> str:
    """``full`` for the owner (and its TSM), ``provider`` for the new provider."""
    return "full" if actor.subject.pk == campaign.owner_id else "provider"
