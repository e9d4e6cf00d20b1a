"""Writes of the tenants app. Each is ``<noun>_<verb>(*, actor, ...)``: validates, writes, audits in
the same transaction, and schedules side effects (emails) with ``transaction.on_commit``."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from portal.errors import NotFoundError
from tenants.access import Action, Actor, require
from tenants.errors import (
    AlreadyMember,
    ApplicationAlreadyDecided,
    InvalidApplication,
    InvalidMandate,
    InvitationInvalid,
    LastOwner,
    MandateNotActive,
    NotPlatformOperator,
    SlugTaken,
)
from tenants.models import (
    SLUG_RE,
    Invitation,
    Mandate,
    MandateAction,
    MemberRole,
    Membership,
    Organisation,
    OrgRole,
    OrgStatus,
)

User = get_user_model()


class PlatformActor:
    """The platform operator (a staff user), who acts for no organisation."""

    def __init__(self, user: Any) -> None:
        if not (getattr(user, "is_authenticated", False) and user.is_staff):
            raise NotPlatformOperator("Only a platform operator may do this.")
        self.user = user
        self.org = None
        self.on_behalf_of = None


# --- onboarding ------------------------------------------------------------------------------


def organisation_apply(
    *, name: str, slug: str, roles: list[str], contact_name: str, contact_email: str, note: str = ""
) -> Organisation:
    """An organisation applies to join. Anyone may apply; nothing is usable until approved.

    Effects: a ``pending`` organisation and an ``org:apply`` audit event.
    """
    import re

    name = name.strip()
    if not name:
        raise InvalidApplication("Give the organisation's name.", fields={"name": ["required"]})
    if not re.match(SLUG_RE, slug or ""):
        raise InvalidApplication(
            "The short name must be 1–50 lowercase letters, digits and inner hyphens.",
            fields={"slug": ["invalid"]},
        )
    unknown = [r for r in roles if r not in OrgRole.values]
    if not roles or unknown:
        raise InvalidApplication(
            f"Choose at least one role among {', '.join(OrgRole.values)}"
            + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else ""),
            fields={"roles": ["invalid"]},
        )
    try:
        with transaction.atomic():
            org = Organisation.objects.create(
                name=name,
                slug=slug,
                roles=sorted(set(roles)),
                contact_name=contact_name.strip(),
                contact_email=contact_email.strip(),
                application_note=note,
                status=OrgStatus.PENDING,
            )
            audit_record(
                actor=None, tag=AuditTag.ORG_APPLY, target=org, details={"roles": org.roles}, concerns=[org]
            )
    except IntegrityError:
        raise SlugTaken(
            f"The short name '{slug}' is taken; choose another.", fields={"slug": ["taken"]}
        ) from None
    return org


def organisation_approve(*, operator: PlatformActor, org: Organisation) -> Invitation:
    """The platform operator approves a pending application.

    Effects: the organisation becomes active and its contact is invited as owner (email on commit).
    """
    with transaction.atomic():
        updated = Organisation.objects.filter(pk=org.pk, status=OrgStatus.PENDING).update(
            status=OrgStatus.ACTIVE, decided_at=timezone.now()
        )
        if not updated:
            raise ApplicationAlreadyDecided("This application was already decided.")
        org.refresh_from_db()
        audit_record(actor=operator, tag=AuditTag.ORG_APPROVE, target=org, concerns=[org])
        invitation, _token = _invitation_create(
            org=org, email=org.contact_email, role=MemberRole.OWNER, invited_by=operator.user, actor=operator
        )
    return invitation


def organisation_reject(*, operator: PlatformActor, org: Organisation, reason: str = "") -> None:
    with transaction.atomic():
        updated = Organisation.objects.filter(pk=org.pk, status=OrgStatus.PENDING).update(
            status=OrgStatus.REJECTED, decided_at=timezone.now()
        )
        if not updated:
            raise ApplicationAlreadyDecided("This application was already decided.")
        audit_record(
            actor=operator,
            tag=AuditTag.ORG_REJECT,
            target=org,
            details={"reason": reason[:500]},
            concerns=[org],
        )


def organisation_suspend(*, operator: PlatformActor, org: Organisation) -> None:
    with transaction.atomic():
        if not Organisation.objects.filter(pk=org.pk, status=OrgStatus.ACTIVE).update(
            status=OrgStatus.SUSPENDED
        ):
            raise ApplicationAlreadyDecided("Only an active organisation can be suspended.")
        audit_record(actor=operator, tag=AuditTag.ORG_SUSPEND, target=org, concerns=[org])


# --- invitations and members -----------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_url(token: str) -> str:
    return f"{settings.TESSERA_BASE_URL.rstrip('/')}/invitations/{token}/"


def _invitation_create(
    *, org: Organisation, email: str, role: str, invited_by: Any, actor: Any
) -> tuple[Invitation, str]:
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        org=org,
        email=email,
        role=role,
        token_hash=_token_hash(token),
        invited_by=invited_by,
        expires_at=timezone.now() + timedelta(hours=settings.INVITATION_TTL_HOURS),
    )
    audit_record(
        actor=actor,
        tag=AuditTag.MEMBER_INVITE,
        target=invitation,
        details={"email": email, "role": role},
        concerns=[org],
    )
    link = invitation_url(token)
    transaction.on_commit(
        lambda: send_mail(
            subject=f"You are invited to {org.name} on Tessera",
            message=f"Join {org.name} as {role}: {link}\nThe link works once and expires in "
            f"{settings.INVITATION_TTL_HOURS} hours.",
            from_email=None,
            recipient_list=[email],
        )
    )
    return invitation, token


def invitation_create(*, actor: Actor, email: str, role: str) -> tuple[Invitation, str]:
    """Invite ``email`` to the actor's organisation with ``role``. Returns the invitation and the
    one-time token (only its hash is stored); the link goes out by email on commit."""
    require(actor, Action.MEMBERS_MANAGE)
    if role not in MemberRole.values:
        raise InvalidApplication(
            f"Role must be one of {', '.join(MemberRole.values)}.", fields={"role": ["invalid"]}
        )
    if role == MemberRole.OWNER and actor.member_role != MemberRole.OWNER:
        raise InvalidApplication("Only an owner may invite another owner.", fields={"role": ["invalid"]})
    with transaction.atomic():
        return _invitation_create(org=actor.org, email=email, role=role, invited_by=actor.user, actor=actor)


def invitation_revoke(*, actor: Actor, invitation: Invitation) -> None:
    require(actor, Action.MEMBERS_MANAGE)
    with transaction.atomic():
        if not Invitation.objects.filter(
            pk=invitation.pk, org=actor.org, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now()):
            raise InvitationInvalid("This invitation is no longer open.")
        audit_record(actor=actor, tag=AuditTag.INVITATION_REVOKE, target=invitation)


def invitation_lookup(*, token: str) -> Invitation:
    """The open invitation behind a link, or InvitationInvalid (unknown, used, revoked, expired alike)."""
    if not token or len(token) > 200:
        raise InvitationInvalid("This invitation link is not valid (it may have expired or been used).")
    invitation = Invitation.objects.select_related("org").filter(token_hash=_token_hash(token)).first()
    if invitation is None or invitation.state != "open" or invitation.org.status != OrgStatus.ACTIVE:
        raise InvitationInvalid("This invitation link is not valid (it may have expired or been used).")
    return invitation


def invitation_accept(
    *, token: str, user: Any | None = None, username: str = "", password: str = "", email: str = ""
) -> Membership:
    """Accept an invitation as the signed-in ``user``, or by creating an account.

    Exactly once: the invitation row is claimed with a compare-and-set on ``accepted_at``, so two
    concurrent accepts of one link make one membership.
    """
    invitation = invitation_lookup(token=token)
    with transaction.atomic():
        if user is None or not getattr(user, "is_authenticated", False):
            if not username or not password:
                raise InvalidApplication(
                    "Choose a username and a password to create your account.",
                    fields={"username": ["required"], "password": ["required"]},
                )
            if len(username) > 150 or User.objects.filter(username=username).exists():
                raise InvalidApplication(
                    "That username is taken or too long.", fields={"username": ["invalid"]}
                )
            candidate = User(username=username, email=email or invitation.email)
            try:
                validate_password(password, candidate)
            except ValidationError as exc:
                raise InvalidApplication(" ".join(exc.messages), fields={"password": exc.messages}) from None
            candidate.set_password(password)
            candidate.save()
            user = candidate
        if Membership.objects.filter(user=user, org=invitation.org).exists():
            raise AlreadyMember(f"You are already a member of {invitation.org.name}.")
        claimed = Invitation.objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(accepted_at=timezone.now(), accepted_by=user)
        if not claimed:
            raise InvitationInvalid("This invitation link is not valid (it may have expired or been used).")
        membership = Membership.objects.create(user=user, org=invitation.org, role=invitation.role)
        joined = Actor(user=user, org=invitation.org, member_role=invitation.role)
        audit_record(
            actor=joined, tag=AuditTag.MEMBER_JOIN, target=membership, details={"role": invitation.role}
        )
    return membership


def _owners_left(org: Organisation, excluding: Membership) -> int:
    return Membership.objects.filter(org=org, role=MemberRole.OWNER).exclude(pk=excluding.pk).count()


def _lock_memberships(org: Organisation, membership: Membership) -> Membership:
    """Serialise changes to one organisation's members, and re-read ``membership`` under the lock.

    Without it two owners demoting (or removing) each other at once each count the other as the
    remaining owner and both succeed, leaving none (READ COMMITTED; SQLite already serialises
    writers with BEGIN IMMEDIATE).
    """
    list(Organisation.objects.select_for_update().filter(pk=org.pk).values_list("pk"))
    current = Membership.objects.select_related("user").filter(pk=membership.pk, org=org).first()
    if current is None:
        raise NotFoundError("No such membership.")
    return current


def membership_set_role(*, actor: Actor, membership: Membership, role: str) -> Membership:
    require(actor, Action.MEMBERS_MANAGE)
    if role not in MemberRole.values:
        raise InvalidApplication(
            f"Role must be one of {', '.join(MemberRole.values)}.", fields={"role": ["invalid"]}
        )
    if MemberRole.OWNER in (role, membership.role) and actor.member_role != MemberRole.OWNER:
        raise InvalidApplication("Only an owner may grant or take away ownership.")
    with transaction.atomic():
        membership = _lock_memberships(actor.org, membership)
        if (
            membership.role == MemberRole.OWNER
            and role != MemberRole.OWNER
            and not _owners_left(actor.org, membership)
        ):
            raise LastOwner("An organisation keeps at least one owner; make someone else owner first.")
        old = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(
            actor=actor, tag=AuditTag.MEMBER_ROLE, target=membership, details={"from": old, "to": role}
        )
    return membership


def membership_remove(*, actor: Actor, membership: Membership) -> None:
    require(actor, Action.MEMBERS_MANAGE)
    if membership.role == MemberRole.OWNER and actor.member_role != MemberRole.OWNER:
        raise InvalidApplication("Only an owner may remove an owner.")
    with transaction.atomic():
        membership = _lock_memberships(actor.org, membership)
        if membership.role == MemberRole.OWNER and not _owners_left(actor.org, membership):
            raise LastOwner("An organisation keeps at least one owner.")
        audit_record(
            actor=actor,
            tag=AuditTag.MEMBER_REMOVE,
            target=membership,
            details={"username": membership.user.username},
        )
        membership.delete()


# --- mandates --------------------------------------------------------------------------------


def mandate_grant(
    *,
    actor: Actor,
    grantee: Organisation,
    actions: list[str],
    scope: dict[str, Any] | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> Mandate:
    """The actor's organisation allows ``grantee`` to do ``actions`` on its behalf.

    Preconditions: the actor acts for itself (a mandate cannot be granted on someone's behalf);
    the grantee is another active organisation; actions and scope are well formed.
    Effects: the mandate row and a ``mandate:grant`` event concerning both organisations.
    """
    require(actor, Action.MANDATES_MANAGE)
    if actor.on_behalf_of is not None:
        raise InvalidMandate("A mandate cannot be granted on someone else's behalf.")
    if grantee.pk == actor.org.pk or grantee.status != OrgStatus.ACTIVE:
        raise InvalidMandate(
            "The grantee must be another active organisation.", fields={"grantee": ["invalid"]}
        )
    unknown = [a for a in actions if a not in MandateAction.values]
    if not actions or unknown or len(set(actions)) != len(actions):
        raise InvalidMandate(
            f"Actions must be a non-empty list of distinct values among {', '.join(MandateAction.values)}.",
            fields={"actions": ["invalid"]},
        )
    scope = _validate_scope(scope or {})
    now = timezone.now()
    valid_from = valid_from or now
    if valid_until is not None and valid_until <= max(valid_from, now):
        raise InvalidMandate(
            "valid_until must be in the future and after valid_from.", fields={"valid_until": ["invalid"]}
        )
    with transaction.atomic():
        mandate = Mandate.objects.create(
            grantor=actor.org,
            grantee=grantee,
            actions=sorted(actions),
            scope=scope,
            valid_from=valid_from,
            valid_until=valid_until,
            created_by=actor.user,
        )
        audit_record(
            actor=actor,
            tag=AuditTag.MANDATE_GRANT,
            target=mandate,
            details={"grantee": grantee.slug, "actions": mandate.actions, "scope": scope},
            concerns=[grantee],
        )
    return mandate


def _validate_scope(scope: dict[str, Any]) -> dict[str, Any]:
    from devices.models import DeviceKind  # devices depends on tenants; import at call time

    if not isinstance(scope, dict):
        raise InvalidMandate("scope must be an object.", fields={"scope": ["invalid"]})
    allowed = {"issuer", "device_kinds", "serials"}
    extra = set(scope) - allowed
    if extra:
        raise InvalidMandate(
            f"Unknown scope keys: {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed))}."
        )
    if "issuer" in scope and not (isinstance(scope["issuer"], str) and len(scope["issuer"]) <= 50):
        raise InvalidMandate("scope.issuer must be an organisation's short name.")
    kinds = scope.get("device_kinds", [])
    if not isinstance(kinds, list) or any(k not in DeviceKind.values for k in kinds):
        raise InvalidMandate(f"scope.device_kinds must be a list among {', '.join(DeviceKind.values)}.")
    serials = scope.get("serials", [])
    if (
        not isinstance(serials, list)
        or len(serials) > 10000
        or any(not isinstance(s, str) or not 0 < len(s) <= 64 for s in serials)
    ):
        raise InvalidMandate("scope.serials must be a list of device serials (at most 10,000).")
    return scope


def mandate_revoke(*, actor: Actor, mandate: Mandate) -> Mandate:
    """The grantor (or the grantee, renouncing it) ends a mandate at once. Compare-and-set."""
    require(actor, Action.MANDATES_MANAGE)
    if actor.on_behalf_of is not None or actor.org.pk not in (mandate.grantor_id, mandate.grantee_id):
        raise InvalidMandate("Only the grantor or the grantee may revoke a mandate.")
    with transaction.atomic():
        if not Mandate.objects.filter(pk=mandate.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        ):
            raise MandateNotActive("This mandate is already revoked.")
        mandate.refresh_from_db()
        audit_record(
            actor=actor,
            tag=AuditTag.MANDATE_REVOKE,
            target=mandate,
            concerns=[mandate.grantor, mandate.grantee],
        )
    return mandate
