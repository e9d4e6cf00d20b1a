"""Reads of the certificate authority: certificates through ``visible_to``; CA roots and CRLs are
public (any authenticated caller), so their reads take no actor."""

from __future__ import annotations

from django.db.models import QuerySet

from devices.models import SecureElement
from keys.models import Certificate, CertificateAuthority, CertificateKind
from portal.errors import NotFoundError
from tenants.access import Action, Actor, get_visible, visible_to


def certificate_list(*, actor: Actor, kind: str = "") -> QuerySet[Certificate]:
    """Certificates the actor issued (as a CA), holds (as an OCE) or whose SE it sees (CASD)."""
    qs = visible_to(Certificate, actor, Action.CERTIFICATES_VIEW).select_related(
        "issuer", "subject_org", "secure_element"
    )
    if kind:
        qs = qs.filter(kind=kind)
    return qs.order_by("-created_at", "pk")


def certificate_get(*, actor: Actor, pk: object) -> Certificate:
    return get_visible(Certificate, actor, Action.CERTIFICATES_VIEW, pk=pk)


def casd_certificate_for_se(*, actor: Actor, secure_element: SecureElement) -> Certificate:
    """The SE's newest live CASD certificate, for whoever sees the SE (on a mandator's behalf too,
    within the mandate); ``NotFoundError`` when it has none."""
    cert = (
        visible_to(Certificate, actor, Action.DEVICES_VIEW)
        .filter(kind=CertificateKind.CASD, secure_element=secure_element, revoked_at__isnull=True)
        .select_related("issuer")
        .order_by("-created_at")
        .first()
    )
    if cert is None:
        raise NotFoundError("This secure element has no CASD certificate yet.")
    return cert


def casd_certificate_of(secure_element: SecureElement) -> Certificate | None:
    """Server-internal (workers, the software SE's provisioning): the SE's newest live CASD
    certificate, without an actor. Never call it from a view."""
    return (
        Certificate.objects.filter(
            kind=CertificateKind.CASD, secure_element=secure_element, revoked_at__isnull=True
        )
        .select_related("issuer")
        .order_by("-created_at")
        .first()
    )


def ca_public_list() -> QuerySet[CertificateAuthority]:
    """Every certificate authority: roots are public, so relying parties can pin them."""
    return CertificateAuthority.objects.select_related("owner").order_by("created_at", "pk")


def ca_public_get(pk: object) -> CertificateAuthority:
    try:
        return ca_public_list().get(pk=pk)
    except (CertificateAuthority.DoesNotExist, ValueError, TypeError):
        raise NotFoundError("No such certificate authority.") from None
