"""Who may see and do what: the one access module (DESIGN §5, STYLE habits 4–5).

- ``Actor`` is the explicit acting party: a user, acting for one of its organisations, possibly on
  behalf of a mandator. Services, selectors and tasks take it as an argument; there is no global
  "current tenant".
- ``Action`` names what is being attempted. ``MEMBER_ROLE_ACTIONS`` says which membership roles
  may attempt it; ``MANDATE_FOR_ACTION`` which mandate action a grantee needs to attempt it on the
  grantor's behalf.
- ``rule(Model)`` registers one predicate per tenant-owned model: given the *subject* organisation
  (the mandator when acting on behalf, else the acting organisation) it returns a ``Q``. The same
  predicate serves list filters (``visible_to``) and single-object checks (``get_visible``), so the
  two cannot drift apart. Missing visibility raises ``NotFoundError``: "not yours" looks exactly
  like "does not exist".
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import models
from django.db.models import Q, QuerySet

from audit.models import AuditEvent, AuditEventOrg
from portal.errors import ForbiddenError, NotFoundError
from tenants.models import (
    Consent,
    Contract,
    Invitation,
    Mandate,
    MandateAction,
    MemberRole,
    Membership,
    Organisation,
    OrgStatus,
)


class Action(enum.StrEnum):
    ORG_VIEW = "org.view"
    MEMBERS_VIEW = "members.view"
    MEMBERS_MANAGE = "members.manage"
    MANDATES_VIEW = "mandates.view"
    MANDATES_MANAGE = "mandates.manage"
    DEVICES_VIEW = "devices.view"
    CONTRACTS_VIEW = "contracts.view"
    CONSENTS_VIEW = "consents.view"
    # Requesting consent (a provider) and deciding or revoking it (the subscriber); never on behalf.
    CONSENTS_MANAGE = "consents.manage"
    AUDIT_VIEW = "audit.view"
    # Registering, pairing and suspending devices and secure elements (never on someone's behalf).
    DEVICES_MANAGE = "devices.manage"
    # Importing, generating and retiring key sets in the subject's vault.
    KEYS_MANAGE = "keys.manage"
    JOBS_VIEW = "jobs.view"
    JOBS_REQUEST = "jobs.request"
    # Certificates the subject issued (as a CA) or holds (as an off-card entity); never on behalf.
    CERTIFICATES_VIEW = "certificates.view"
    # Requesting an OCE certificate; for a CA: creating its root, certifying, revoking.
    CERTIFICATES_MANAGE = "certificates.manage"


_VIEW = {
    Action.ORG_VIEW,
    Action.MEMBERS_VIEW,
    Action.MANDATES_VIEW,
    Action.DEVICES_VIEW,
    Action.CONTRACTS_VIEW,
    Action.CONSENTS_VIEW,
    Action.AUDIT_VIEW,
    Action.JOBS_VIEW,
    Action.CERTIFICATES_VIEW,
}
_OPERATE = {
    Action.JOBS_REQUEST,
    Action.DEVICES_MANAGE,
    Action.KEYS_MANAGE,
    Action.CERTIFICATES_MANAGE,
    Action.CONSENTS_MANAGE,
}
MEMBER_ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    MemberRole.AUDITOR: frozenset(_VIEW),
    MemberRole.OPERATOR: frozenset(_VIEW | _OPERATE),
    MemberRole.ADMIN: frozenset(_VIEW | _OPERATE | {Action.MEMBERS_MANAGE, Action.MANDATES_MANAGE}),
    MemberRole.OWNER: frozenset(_VIEW | _OPERATE | {Action.MEMBERS_MANAGE, Action.MANDATES_MANAGE}),
}

# Acting on behalf of a mandator: only these actions, each needing one mandate action. Anything
# absent here (members, mandates of the grantor…) can never be done on someone's behalf.
MANDATE_FOR_ACTION: dict[Action, str] = {
    Action.ORG_VIEW: MandateAction.DEVICES_VIEW,
    Action.DEVICES_VIEW: MandateAction.DEVICES_VIEW,
    Action.AUDIT_VIEW: MandateAction.AUDIT_VIEW,
    Action.JOBS_VIEW: MandateAction.DEVICES_VIEW,
    Action.KEYS_MANAGE: MandateAction.KEYS_LOAD,
}
# Requesting a job on a mandator's behalf needs the mandate action of that job kind, which the
# jobs service checks (``jobs.services.MANDATE_FOR_KIND``); the generic gate is any such action.
JOB_MANDATE_ACTIONS = frozenset(
    {
        MandateAction.SD_CREATE,
        MandateAction.SD_DELETE,
        MandateAction.SD_LOCK,
        MandateAction.KEYS_LOAD,
        MandateAction.KEYS_ROTATE,
        MandateAction.APPS_MANAGE,
        MandateAction.STATUS_READ,
    }
)


@dataclass(frozen=True)
class Actor:
    """A user acting for ``org`` (and possibly on behalf of ``on_behalf_of`` under ``mandate``)."""

    user: Any
    org: Organisation
    member_role: str
    on_behalf_of: Organisation | None = None
    mandate: Mandate | None = None

    @property
    def subject(self) -> Organisation:
        """The organisation whose view applies: the mandator when acting on its behalf."""
        return self.on_behalf_of or self.org

    def can(self, action: Action) -> bool:
        if action not in MEMBER_ROLE_ACTIONS.get(self.member_role, frozenset()):
            return False
        if self.mandate is not None:
            if action == Action.JOBS_REQUEST:
                return bool(JOB_MANDATE_ACTIONS & set(self.mandate.actions))
            needed = MANDATE_FOR_ACTION.get(action)
            return needed is not None and needed in self.mandate.actions
        return True


def resolve_actor(user: Any, org_slug: str, on_behalf_of: str | None = None) -> Actor:
    """Resolve the acting organisation named in the URL; 404 unless the user is an active member.

    With ``on_behalf_of``, an active mandate from that organisation to the acting one must exist,
    otherwise 404 too: a mandator that gave you nothing is, to you, a stranger.
    """
    if not getattr(user, "is_authenticated", False):
        raise NotFoundError("No such organisation.")
    membership = (
        Membership.objects.select_related("org")
        .filter(user=user, org__slug=org_slug, org__status=OrgStatus.ACTIVE)
        .first()
    )
    if membership is None:
        raise NotFoundError("No such organisation.")
    if not on_behalf_of:
        return Actor(user=user, org=membership.org, member_role=membership.role)
    mandate = (
        Mandate.objects.select_related("grantor")
        .filter(
            Mandate.active_q(),
            grantee=membership.org,
            grantor__slug=on_behalf_of,
            grantor__status=OrgStatus.ACTIVE,
        )
        .order_by("-created_at")
        .first()
    )
    if mandate is None:
        raise NotFoundError("No active mandate from that organisation.")
    return Actor(
        user=user,
        org=membership.org,
        member_role=membership.role,
        on_behalf_of=mandate.grantor,
        mandate=mandate,
    )


def require(actor: Actor, action: Action) -> None:
    """Refuse an action the actor may not attempt.

    Acting on behalf without the mandate action answers 404 (the grantor's data is not the
    actor's); a member whose role is too weak in its own organisation gets 403.
    """
    if actor.can(action):
        return
    if actor.mandate is not None:
        raise NotFoundError("Not found.")
    raise ForbiddenError(f"Your role '{actor.member_role}' in {actor.org.slug} may not do this ({action}).")


M = TypeVar("M", bound=models.Model)
Predicate = Callable[[Actor], Q]
_RULES: dict[type[models.Model], Predicate] = {}


def rule(model: type[models.Model]) -> Callable[[Predicate], Predicate]:
    """Register the visibility predicate of a tenant-owned model."""

    def register(fn: Predicate) -> Predicate:
        _RULES[model] = fn
        return fn

    return register


def tenant_owned_models() -> list[type[models.Model]]:
    return list(_RULES)


def visible_to(model: type[M], actor: Actor, action: Action) -> QuerySet[M]:
    """Every row of ``model`` that ``actor`` may see for ``action``; the only door to tenant data."""
    require(actor, action)
    try:
        predicate = _RULES[model]
    except KeyError:
        raise LookupError(f"{model.__name__} has no access rule; register one with @rule") from None
    return model._default_manager.filter(predicate(actor))


def rule_q(model: type[models.Model], actor: Actor) -> Q:
    """The bare visibility predicate of ``model`` (no action check), to compose other rules."""
    return _RULES[model](actor)


def get_visible(model: type[M], actor: Actor, action: Action, **lookup: Any) -> M:
    """One row the actor may see, or NotFoundError exactly as if it did not exist."""
    try:
        return visible_to(model, actor, action).get(**lookup)
    except (model.DoesNotExist, ValueError, TypeError):  # type: ignore[attr-defined]
        raise NotFoundError(f"No such {model._meta.verbose_name}.") from None


# --- rules for the models of this app ---------------------------------------------------------


@rule(Organisation)
def _organisation_rule(actor: Actor) -> Q:
    return Q(pk=actor.subject.pk)


@rule(Membership)
def _membership_rule(actor: Actor) -> Q:
    return Q(org=actor.subject)


@rule(Mandate)
def _mandate_rule(actor: Actor) -> Q:
    return Q(grantor=actor.subject) | Q(grantee=actor.subject)


@rule(Invitation)
def _invitation_rule(actor: Actor) -> Q:
    return Q(org=actor.subject)


@rule(Contract)
def _contract_rule(actor: Actor) -> Q:
    return Q(subscriber=actor.subject) | Q(provider=actor.subject)


@rule(Consent)
def _consent_rule(actor: Actor) -> Q:
    return Q(subscriber=actor.subject) | Q(grantee=actor.subject)


@rule(AuditEvent)
def _audit_rule(actor: Actor) -> Q:
    return Q(pk__in=AuditEventOrg.objects.filter(org_id=actor.subject.pk).values("event_id"))


def memberships_of(user: Any) -> QuerySet[Membership]:
    """The user's memberships in active organisations: the only cross-organisation read a user
    has, used by the organisation switcher and ``GET /api/v1/orgs/``."""
    if not getattr(user, "is_authenticated", False):
        return Membership.objects.none()
    return Membership.objects.filter(user_id=user.pk, org__status=OrgStatus.ACTIVE).select_related("org")
