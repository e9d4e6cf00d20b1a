"""Who sees a provider switch, and how much of it.

The subscriber, the SE issuer, the requester and the new provider follow it as it runs; the old
provider sees a switch only once it has completed, and then only that it lost the device (the
serializer hides the new provider). Everyone else: 404.
"""

from __future__ import annotations

from django.db.models import Q

from switches.models import Switch, SwitchState
from tenants.access import Actor, rule


@rule(Switch)
def _switch_rule(actor: Actor) -> Q:
    org = actor.subject
    return (
        Q(subscriber=org)
        | Q(issuer=org)
        | Q(requested_by=org)
        | Q(new_provider=org)
        | Q(old_provider=org, state=SwitchState.COMPLETED)
    )


def view_of(actor: Actor, switch: Switch) -> str:
    """``full`` (subscriber, issuer, requester), ``new`` (the new provider), ``old`` (the one that lost)."""
    org_id = actor.subject.pk
    if org_id in (switch.subscriber_id, switch.issuer_id, switch.requested_by_id):
        return "full"
    if org_id == switch.new_provider_id:
        return "new"
    return "old"
