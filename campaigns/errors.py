"""Errors of the campaigns app (mapped to JSON errors with stable codes by ``portal.api``)."""

from __future__ import annotations

from portal.errors import ConflictError, DomainError, InvalidError


class CampaignError(DomainError):
    pass


class CampaignInvalid(InvalidError, CampaignError):
    code = "invalid_campaign"


class CampaignStateConflict(ConflictError, CampaignError):
    """The action does not apply to the campaign's state (pausing a draft, resuming a completed…)."""

    code = "campaign_state"
