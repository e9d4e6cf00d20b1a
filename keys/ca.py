"""The Controlling Authority's certificate authority (DESIGN §6; issue 5 item 1).

A CA organisation (role ``CA``) runs one active ``CertificateAuthority``: a P-256 root whose
private key is sealed in its vault (or held in a PKCS#11 token) and used only through a
``keys.signing.Signer``. It issues

- **CASD certificates** binding a secure element's identity to the key-agreement key generated
  inside that SE (key usage ``keyAgreement``), at batch import or on the CA's own request;
- **OCE certificates** for off-card entities (TSMs, service and application providers) from a
  PKCS#10 CSR: the CSR proves possession of the key; its subject and extensions are ignored — the
  CA writes the requesting organisation as the subject (key usage ``digitalSignature`` and
  ``keyAgreement``, as SCP11a uses the OCE key in the static key agreement).

The CA never receives a private key. Revocation publishes a new CRL at once. Every operation
writes an audit event in the transaction that makes the change.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from devices.models import SecureElement
from keys import gp_ca, x509_ca
from keys.models import CAStatus, Certificate, CertificateAuthority, CertificateKind, RevocationReason
from keys.signing import VAULT, Signer, signer_create, signer_load
from portal.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from tenants.access import Action, Actor, require
from tenants.models import Organisation, OrgRole

# Policy, in one place: which organisations get an OCE certificate at once, on request.
OCE_ELIGIBLE_ROLES = frozenset({OrgRole.TSM, OrgRole.SERVICE_PROVIDER, OrgRole.APPLICATION_PROVIDER})
ROOT_VALID_DAYS = 25 * 365
CASD_VALID_DAYS = 20 * 365  # a device lives 10–20 years; its SE key with it
OCE_VALID_DAYS = 2 * 365
MAX_VALID_DAYS = 30 * 365
CRL_VALIDITY = timedelta(days=7)
CRL_REFRESH_BEFORE = timedelta(days=1)  # republish when the published CRL has less than this left
CA_SETTING = "TESSERA_CA"


class CAError(InvalidError):
    code = "invalid_ca_request"


class CAConflict(ConflictError):
    code = "ca_conflict"


class CertificateRevoked(ConflictError):
    code = "certificate_already_revoked"


class NoCertificateAuthority(ConflictError):
    """No (or no unambiguous) active CA to certify with: an operator has to create or name one."""

    code = "no_certificate_authority"


def oce_eligible(org: Organisation) -> bool:
    """May ``org`` obtain an OCE certificate on request, without a CA officer's review?"""
    return any(org.has_role(role) for role in OCE_ELIGIBLE_ROLES)


def _acting_for_itself(actor: Actor) -> None:
    if actor.on_behalf_of is not None:
        raise NotFoundError("Certificates are never requested or managed on someone's behalf.")


def _require_ca_officer(actor: Actor) -> None:
    """The acting organisation runs a CA, and the member may manage certificates."""
    _acting_for_itself(actor)
    require(actor, Action.CERTIFICATES_MANAGE)
    if not actor.org.has_role(OrgRole.CONTROLLING_AUTHORITY):
        raise ForbiddenError("Only a Controlling Authority organisation runs a certificate authority.")


def _valid_days(value: object, default: int) -> int:
    days = default if value is None else value
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_VALID_DAYS:
        raise CAError(
            f"valid_days must be an integer from 1 to {MAX_VALID_DAYS}.",
            fields={"valid_days": ["Out of range."]},
        )
    return days


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


# --- the CA itself ------------------------------------------------------------------------------


def ca_create(
    *, actor: Actor, name: str, signer_ref: str = VAULT, valid_days: int = ROOT_VALID_DAYS
) -> CertificateAuthority:
    """Create the acting CA organisation's root: a fresh P-256 key and its self-signed certificate.

    Preconditions: the actor acts for itself, for an organisation with role ``CA``, and may manage
    certificates; the organisation has no active CA yet. ``signer_ref`` picks the key's home
    (``vault``, or ``pkcs11:<label>`` once that backend is installed).
    Effects: the CA row (private key sealed for ``ca-root:<id>``, or in the token), a first CRL,
    a ``ca:create`` event.
    """
    _require_ca_officer(actor)
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 120 or "\x00" in name:
        raise CAError("name must be 1–120 characters.", fields={"name": ["Invalid."]})
    days = _valid_days(valid_days, ROOT_VALID_DAYS)
    org = actor.org
    if CertificateAuthority.objects.filter(owner=org, status=CAStatus.ACTIVE).exists():
        raise CAConflict(f"{org.name} already runs an active certificate authority; retire it first.")
    ca_id = uuid.uuid4()
    now = x509_ca.second(timezone.now())
    not_after = now + timedelta(days=days)
    subject = x509_ca.name_der(common_name=name, organisation=org.name, unit="Controlling Authority")
    try:
        with transaction.atomic():
            new = signer_create(org_id=org.pk, ca_id=ca_id, signer_ref=signer_ref)
            kid = x509_ca.key_identifier(new.public_der)
            root = x509_ca.certificate_build(
                signer=new.signer,
                issuer_name=subject,
                issuer_key_id=kid,
                subject_name=subject,
                subject_public_key=new.public_der,
                serial=x509_ca.random_serial(),
                not_before=now,
                not_after=not_after,
                profile=x509_ca.ROOT,
            )
            ca = CertificateAuthority.objects.create(
                id=ca_id,
                owner=org,
                name=name,
                signer_ref=new.signer_ref,
                sealed_private_key=new.sealed,
                public_key=new.public_der,
                kloc_id=kid.hex(),
                root_certificate=root,
                not_before=now,
                not_after=not_after,
            )
            audit_record(
                actor=actor,
                tag=AuditTag.CA_CREATE,
                target=ca,
                details={
                    "name": name,
                    "kloc_id": kid.hex(),
                    "root_sha256": _fingerprint(root),
                    "signer": new.signer_ref.split(":")[0],
                },
            )
            _publish_crl(ca, new.signer)
    except IntegrityError:
        raise CAConflict(f"{org.name} already runs an active certificate authority.") from None
    return ca


def ca_signer(ca: CertificateAuthority) -> Signer:
    """The CA's signer. Server-internal: signs only what this module builds."""
    return signer_load(
        org_id=ca.owner_id,
        ca_id=ca.pk,
        signer_ref=ca.signer_ref,
        sealed=bytes(ca.sealed_private_key),
        public_der=bytes(ca.public_key),
    )


def ca_lookup(*, ca: CertificateAuthority | None = None) -> CertificateAuthority:
    """The CA that certifies when the caller does not name one (batch import, CSR requests).

    ``ca`` when given (it must be active); else ``settings.TESSERA_CA`` or the environment variable
    ``TESSERA_CA`` — a CA id or the slug of the CA organisation; else the only active CA.
    Raises ``NoCertificateAuthority`` (409) when there is none or several to choose from.
    """
    if ca is not None:
        if ca.status != CAStatus.ACTIVE:
            raise NoCertificateAuthority("That certificate authority is retired.")
        return ca
    active = CertificateAuthority.objects.select_related("owner").filter(status=CAStatus.ACTIVE)
    named = str(getattr(settings, CA_SETTING, "") or os.environ.get(CA_SETTING, "")).strip()
    if named:
        try:
            q = Q(pk=uuid.UUID(named))
        except ValueError:
            q = Q(owner__slug=named)
        found = active.filter(q).first()
        if found is None:
            raise NoCertificateAuthority(f"{CA_SETTING}={named!r} names no active certificate authority.")
        return found
    cas = list(active[:2])
    if len(cas) != 1:
        raise NoCertificateAuthority(
            "No active certificate authority."
            if not cas
            else f"Several active certificate authorities: set {CA_SETTING}."
        )
    return cas[0]


# --- issuing ----------------------------------------------------------------------------------------


def _issue(
    *,
    actor: Actor | None,
    ca: CertificateAuthority,
    kind: str,
    key: ec.EllipticCurvePublicKey,
    subject_name: bytes,
    gp_subject: bytes,
    valid_days: int,
    subject_org: Organisation | None = None,
    secure_element: SecureElement | None = None,
    concerns: list[Any],
) -> Certificate:
    signer = ca_signer(ca)
    public_der = x509_ca.spki_der(key)
    now = x509_ca.second(timezone.now())
    not_after = min(now + timedelta(days=valid_days), ca.not_after)
    serial = x509_ca.random_serial()
    profile = x509_ca.CASD if kind == CertificateKind.CASD else x509_ca.OCE
    der = x509_ca.certificate_build(
        signer=signer,
        issuer_name=x509.load_der_x509_certificate(bytes(ca.root_certificate)).subject.public_bytes(),
        issuer_key_id=bytes.fromhex(ca.kloc_id),
        subject_name=subject_name,
        subject_public_key=public_der,
        serial=serial,
        not_before=now,
        not_after=not_after,
        profile=profile,
    )
    cert = Certificate.objects.create(
        issuer=ca,
        kind=kind,
        subject_org=subject_org,
        secure_element=secure_element,
        serial=format(serial, "x"),
        subject=x509_ca.subject_text(der),
        public_key=public_der,
        der=der,
        gp_der=gp_ca.gp_certificate_build(
            signer=signer,
            ca_identifier=bytes.fromhex(ca.kloc_id),
            serial=serial,
            subject_identifier=gp_subject,
            public_key=key,
            not_before=now,
            not_after=not_after,
        ),
        fingerprint=_fingerprint(der),
        not_before=now,
        not_after=not_after,
    )
    audit_record(
        actor=actor,
        tag=AuditTag.CERTIFICATE_ISSUE,
        target=cert,
        details={
            "kind": kind,
            "ca": str(ca.pk),
            "serial": cert.serial,
            "subject": cert.subject,
            "sha256": cert.fingerprint,
            "not_after": not_after.isoformat(),
        },
        concerns=[ca.owner_id, *concerns],
    )
    return cert


def casd_certify(
    *,
    actor: Actor,
    secure_element: SecureElement,
    public_key: object,
    ca: CertificateAuthority | None = None,
    valid_days: int | None = None,
) -> Certificate:
    """Certify the CASD key-agreement key generated inside ``secure_element``.

    ``public_key``: a ``cryptography`` P-256 public key, its SPKI DER, or the uncompressed point
    ``04‖X‖Y`` (65 bytes) as an SE reports it. ``ca``: the certifying CA, by default
    ``ca_lookup()`` (configuration, or the only active CA).

    Who may call it, acting for itself: a member of the CA's organisation who may manage
    certificates, or — at batch import — a member of the SE's issuer or supplier who may manage
    devices (the CA's policy certifies every SE its SE issuers and suppliers register). Anyone
    else: 404, as if the SE did not exist.

    Idempotent: the same key already certified (live) by this CA returns that certificate. A new
    key supersedes the SE's previous live CASD certificates of this CA: they are revoked
    (``superseded``) and the CRL republished. Effects: a ``certificate:issue`` event.
    """
    _acting_for_itself(actor)
    ca = ca_lookup(ca=ca)
    org = actor.org
    if org.pk == ca.owner_id:
        _require_ca_officer(actor)
    elif org.pk in (secure_element.issuer_id, secure_element.supplier_id):
        require(actor, Action.DEVICES_MANAGE)
    else:
        raise NotFoundError("No such secure element.")
    key = x509_ca.public_key_parse(public_key)
    days = _valid_days(valid_days, CASD_VALID_DAYS)
    spki = x509_ca.spki_der(key)
    with transaction.atomic():
        locked = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
        live = list(
            Certificate.objects.filter(
                issuer=locked,
                kind=CertificateKind.CASD,
                secure_element=secure_element,
                revoked_at__isnull=True,
            )
        )
        for cert in live:
            if bytes(cert.public_key) == spki and cert.status == "valid":
                return cert
        other = Certificate.objects.filter(public_key=spki, revoked_at__isnull=True).exclude(
            kind=CertificateKind.CASD, secure_element=secure_element
        )
        if other.exists():
            raise CAConflict(
                "This public key is already certified for another subject.", code="key_already_certified"
            )
        subject = x509_ca.name_der(
            common_name=secure_element.serial,
            organisation=secure_element.issuer.name,
            unit="CASD",
            serial_number=str(secure_element.pk),
        )
        cert = _issue(
            actor=actor,
            ca=locked,
            kind=CertificateKind.CASD,
            key=key,
            subject_name=subject,
            gp_subject=gp_ca.se_subject_identifier(secure_element.serial),
            valid_days=days,
            secure_element=secure_element,
            concerns=[secure_element.issuer_id, secure_element.supplier_id],
        )
        if live:
            for old in live:
                _revoke(actor=actor, certificate=old, reason=RevocationReason.SUPERSEDED)
            _publish_crl(locked, ca_signer(locked))
    return cert


def oce_request(
    *, actor: Actor, csr_pem: object, ca: CertificateAuthority | None = None, valid_days: int | None = None
) -> Certificate:
    """An off-card entity asks for a certificate of the key in its CSR; issued at once when the
    requesting organisation holds a role in ``OCE_ELIGIBLE_ROLES`` (TSM, SP, AP).

    The CSR must be PEM PKCS#10, P-256, signed by its own key; only the key is used — the subject
    is forced to the requesting organisation (CN = its slug, O = its name, OU = ``OCE``,
    serialNumber = its id). Errors: ``CertificateInputError`` (400, code ``csr_*``/``wrong_curve``),
    ``ForbiddenError`` (403, ``oce_not_eligible``), ``CAConflict`` (409) when the key is certified
    for another subject. Effects: the certificate and a ``certificate:issue`` event.
    """
    _acting_for_itself(actor)
    require(actor, Action.CERTIFICATES_MANAGE)
    org = actor.org
    if not oce_eligible(org):
        raise ForbiddenError(
            "Only TSMs, service providers and application providers obtain off-card entity certificates.",
            code="oce_not_eligible",
        )
    key = x509_ca.csr_parse(csr_pem)
    days = _valid_days(valid_days, OCE_VALID_DAYS)
    ca = ca_lookup(ca=ca)
    spki = x509_ca.spki_der(key)
    with transaction.atomic():
        locked = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
        taken = Certificate.objects.filter(public_key=spki, revoked_at__isnull=True).exclude(
            kind=CertificateKind.OCE, subject_org=org
        )
        if taken.exists():
            raise CAConflict(
                "This public key is already certified for another subject.", code="key_already_certified"
            )
        subject = x509_ca.name_der(
            common_name=org.slug, organisation=org.name, unit="OCE", serial_number=str(org.pk)
        )
        return _issue(
            actor=actor,
            ca=locked,
            kind=CertificateKind.OCE,
            key=key,
            subject_name=subject,
            gp_subject=org.pk.bytes,
            valid_days=days,
            subject_org=org,
            concerns=[org.pk],
        )


# --- revocation and the CRL ----------------------------------------------------------------------


def _revoke(*, actor: Actor | None, certificate: Certificate, reason: str) -> None:
    now = timezone.now()
    changed = Certificate.objects.filter(pk=certificate.pk, revoked_at__isnull=True).update(
        revoked_at=now, revocation_reason=reason
    )
    if not changed:
        raise CertificateRevoked("This certificate is already revoked.")
    certificate.revoked_at, certificate.revocation_reason = now, reason
    se = certificate.secure_element
    audit_record(
        actor=actor,
        tag=AuditTag.CERTIFICATE_REVOKE,
        target=certificate,
        details={"kind": certificate.kind, "serial": certificate.serial, "reason": reason},
        concerns=[
            certificate.issuer.owner_id,
            certificate.subject_org_id,
            se.issuer_id if se is not None else None,
        ],
    )


def certificate_revoke(*, actor: Actor, certificate: Certificate, reason: str) -> Certificate:
    """The issuing CA revokes a certificate; the CRL is republished in the same transaction.

    Preconditions: the actor acts for the CA organisation that issued it and may manage
    certificates (anyone else: 404); ``reason`` one of ``RevocationReason``. Raises
    ``CertificateRevoked`` (409) when it already is. Effects: ``certificate:revoke`` and
    ``crl:publish`` events.
    """
    _acting_for_itself(actor)
    require(actor, Action.CERTIFICATES_MANAGE)
    if certificate.issuer.owner_id != actor.org.pk:
        raise NotFoundError("No such certificate.")
    _require_ca_officer(actor)
    if reason not in RevocationReason.values:
        raise CAError(
            f"reason must be one of {', '.join(RevocationReason.values)}.", fields={"reason": ["Invalid."]}
        )
    with transaction.atomic():
        ca = CertificateAuthority.objects.select_for_update().get(pk=certificate.issuer_id)
        _revoke(actor=actor, certificate=certificate, reason=reason)
        _publish_crl(ca, ca_signer(ca))
    certificate.refresh_from_db()
    return certificate


def _publish_crl(ca: CertificateAuthority, signer: Signer) -> bytes:
    """Sign and store the next CRL. The caller holds the CA row locked (or just created it)."""
    now = x509_ca.second(timezone.now())
    number = ca.crl_number + 1
    revoked = [
        x509_ca.Revoked(serial=int(c.serial, 16), revoked_at=c.revoked_at, reason=c.revocation_reason)
        for c in Certificate.objects.filter(issuer=ca, revoked_at__isnull=False, not_after__gt=now).order_by(
            "revoked_at"
        )
        if c.revoked_at is not None
    ]
    der = x509_ca.crl_build_der(
        signer=signer,
        issuer_name=x509.load_der_x509_certificate(bytes(ca.root_certificate)).subject.public_bytes(),
        issuer_key_id=bytes.fromhex(ca.kloc_id),
        number=number,
        this_update=now,
        next_update=now + CRL_VALIDITY,
        revoked=revoked,
    )
    CertificateAuthority.objects.filter(pk=ca.pk).update(
        crl=der, crl_number=number, crl_next_update=now + CRL_VALIDITY
    )
    ca.crl, ca.crl_number, ca.crl_next_update = der, number, now + CRL_VALIDITY
    audit_record(
        actor=None,
        tag=AuditTag.CRL_PUBLISH,
        target=ca,
        details={"number": number, "revoked": len(revoked), "sha256": _fingerprint(der)},
        concerns=[ca.owner_id],
    )
    return der


def crl_build(ca: CertificateAuthority) -> bytes:
    """Sign, publish and answer a fresh CRL (DER) of ``ca``: every unexpired revoked certificate,
    with reason codes, the next CRL number and ``nextUpdate`` a week ahead. Platform operation
    (no actor): a ``crl:publish`` event."""
    with transaction.atomic():
        locked = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
        return _publish_crl(locked, ca_signer(locked))


def crl_current(ca: CertificateAuthority) -> bytes:
    """The published CRL, republished first when it is missing or has less than a day left."""
    fresh_until = ca.crl_next_update
    if ca.crl and fresh_until is not None and fresh_until - timezone.now() > CRL_REFRESH_BEFORE:
        return bytes(ca.crl)
    return crl_build(ca)


def chain_for(certificate: Certificate) -> list[bytes]:
    """The certificate's chain as DER, root first: ``[root, leaf]``."""
    return [bytes(certificate.issuer.root_certificate), bytes(certificate.der)]
