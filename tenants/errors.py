"""Errors of the tenants app; each carries a stable code for the API."""

from __future__ import annotations

from portal.errors import ConflictError, DomainError, ForbiddenError, GoneError, InvalidError, NotFoundError


class TenantsError(DomainError):
    pass


class InvalidApplication(InvalidError, TenantsError):
    code = "invalid_application"


class SlugTaken(ConflictError, TenantsError):
    code = "slug_taken"


class ApplicationAlreadyDecided(ConflictError, TenantsError):
    code = "application_decided"


class InvitationInvalid(GoneError, TenantsError):
    """Expired, revoked, already used or unknown invitation link: one answer for all four."""

    code = "invitation_invalid"


class AlreadyMember(ConflictError, TenantsError):
    code = "already_member"


class LastOwner(ConflictError, TenantsError):
    code = "last_owner"


class InvalidMandate(InvalidError, TenantsError):
    code = "invalid_mandate"


class MandateNotActive(ConflictError, TenantsError):
    code = "mandate_not_active"


class NotPlatformOperator(ForbiddenError, TenantsError):
    code = "not_platform_operator"


class InvalidConsent(InvalidError, TenantsError):
    code = "invalid_consent"


class ConsentNotPending(ConflictError, TenantsError):
    code = "consent_not_pending"


class ConsentNotActive(ConflictError, TenantsError):
    code = "consent_not_active"


class NotTheSubscriber(ForbiddenError, TenantsError):
    code = "not_the_subscriber"


__all__ = [
    "ConsentNotActive",
    "ConsentNotPending",
    "InvalidConsent",
    "NotTheSubscriber",
    "AlreadyMember",
    "ApplicationAlreadyDecided",
    "InvalidApplication",
    "InvalidMandate",
    "InvitationInvalid",
    "LastOwner",
    "MandateNotActive",
    "NotFoundError",
    "NotPlatformOperator",
    "SlugTaken",
    "TenantsError",
]
