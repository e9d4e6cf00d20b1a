"""Reads behind the switch form's choices (the pages' selectors; ``switches/selectors.py`` is the
API's). Both are deliberate reads beyond the plain access rules, each with its reason:

- the providers a subscriber may move to: the platform's public directory of active service and
  application providers (names and short names only, as in naming a mandate's grantee);
- the contracts an SE issuer may switch: those in force on devices it sees *as the issuer of their
  secure element* — ``switches.services.switch_request`` lets the issuer move them (a leased kit
  reassigned to another clinic) although the contract rule shows contracts only to their parties.
"""

from __future__ import annotations

from typing import Any

from devices.models import Device
from switches.services import PROVIDER_ROLES
from tenants.access import Action, Actor, visible_to
from tenants.models import Contract, ContractStatus, Organisation, OrgStatus


def eligible_providers(*, exclude: Any = None) -> list[Organisation]:
    """Active service or application providers, by name (``exclude``: the current one's id)."""
    orgs = Organisation.objects.filter(status=OrgStatus.ACTIVE).only("id", "slug", "name", "roles")
    if exclude is not None:
        orgs = orgs.exclude(pk=exclude)
    return [o for o in orgs.order_by("name") if set(o.roles) & PROVIDER_ROLES]


def switchable_contracts(actor: Actor) -> list[Contract]:
    """Contracts in force the actor may start a switch for: its own switchable ones as the
    subscriber, and (the SE issuer, not on anyone's behalf) those on the devices of its SEs."""
    subject = actor.subject
    related = ("provider", "subscriber", "device")
    own = list(
        visible_to(Contract, actor, Action.CONTRACTS_VIEW)
        .filter(subscriber=subject, status=ContractStatus.ACTIVE, switch_allowed=True)
        .select_related(*related)
    )
    if actor.on_behalf_of is not None or not actor.can(Action.JOBS_REQUEST):
        return own
    devices = visible_to(Device, actor, Action.DEVICES_VIEW).filter(secure_elements__issuer=subject)
    issued = (
        Contract.objects.filter(status=ContractStatus.ACTIVE, device__in=devices.values("pk"))
        .exclude(subscriber=subject)
        .select_related(*related)
        .order_by("device__serial", "service")
    )
    return own + list(issued)
