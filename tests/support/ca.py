"""A Controlling Authority for tests: its organisation, member, CA root, and CSRs of fresh keys."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import factories as f

CA_SLUG = "trust-ca"


def ca_org() -> Any:
    from tenants.models import MemberRole, Organisation, OrgRole

    org = Organisation.objects.filter(slug=CA_SLUG).first()
    if org is None:
        org = f.OrganisationFactory(slug=CA_SLUG, name="Trust CA", roles=[OrgRole.CONTROLLING_AUTHORITY])
        f.MembershipFactory(org=org, user=f.UserFactory(username="ca-user"), role=MemberRole.OWNER)
    return org


def ca_user() -> Any:
    return ca_org().memberships.get(user__username="ca-user").user


def ca_actor() -> Any:
    from tenants.access import resolve_actor

    return resolve_actor(ca_user(), CA_SLUG)


def make_ca(name: str = "Trust Root") -> Any:
    """The test CA, created once per test database."""
    from keys import ca as ca_services
    from keys.models import CertificateAuthority

    existing = CertificateAuthority.objects.filter(owner=ca_org(), status="active").first()
    return existing or ca_services.ca_create(actor=ca_actor(), name=name)


def p256_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def make_csr(
    key: Any | None = None, *, common_name: str = "someone-else", algorithm: Any = None
) -> tuple[Any, str]:
    """A fresh P-256 key (unless given) and a PEM CSR for it claiming ``common_name``."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, algorithm or hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def casd_certificate_for(se: Any, key: ec.EllipticCurvePrivateKey | None = None) -> Any:
    """A CASD certificate of ``se`` from the test CA (the CA certifies on its own authority)."""
    from keys import ca as ca_services

    ca = make_ca()
    key = key or ec.generate_private_key(ec.SECP256R1())
    return ca_services.casd_certify(actor=ca_actor(), secure_element=se, public_key=p256_point(key), ca=ca)
