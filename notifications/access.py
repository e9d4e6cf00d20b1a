"""Who sees and manages webhooks: the owner organisation's members, never on anyone's behalf.

Reading (webhooks and their delivery log) needs ``audit.view`` — owners, admins, operators and
auditors; managing (create, change, delete, test, rotate) needs ``members.manage`` — owners and
admins. A webhook is the owner's own business: acting on a mandator's behalf sees none (404).
"""

from __future__ import annotations

from django.db.models import Q

from notifications.models import Delivery, Webhook
from portal.errors import NotFoundError
from tenants.access import Action, Actor, require, rule

VIEW = Action.AUDIT_VIEW
MANAGE = Action.MEMBERS_MANAGE

_NOTHING = Q(pk__in=[])


def require_webhooks(actor: Actor, action: Action) -> None:
    if actor.on_behalf_of is not None:
        raise NotFoundError("Not found.")
    require(actor, action)


@rule(Webhook)
def _webhook_rule(actor: Actor) -> Q:
    return _NOTHING if actor.on_behalf_of is not None else Q(owner=actor.org)


@rule(Delivery)
def _delivery_rule(actor: Actor) -> Q:
    return _NOTHING if actor.on_behalf_of is not None else Q(webhook__owner=actor.org)
