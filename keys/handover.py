"""The SE issuer's side of the manufacturing hand-over: import keys, and ISD keys that arrive wrapped.

The format is ``gp.card.manufacture`` (Django-free, shared with the supplier's tooling; byte by
byte in ``docs/manufacturing-handover.md``). This module holds what only the server does:

- **Import keys** (``ImportKey``): a P-256 key pair per SE issuer, generated here, its private
  key sealed in the issuer's vault (``import-key:<id>``), its public key published. Rotation:
  ``import_key_rotate`` makes a new *current* key and moves the previous one to *retiring*
  (batches wrapped to it are still in flight and still open); ``import_key_retire`` destroys a
  retiring key's private key once those batches are in.
- **The vault path** (``unwrap_isd_keys``): the issuer's private import key is opened from the
  vault, used for one ECDH, and dropped; the ISD keys it unwraps go straight into a vault-sealed
  ``KeySet`` — they are never stored, logged, returned or put in an exception.
- **The supplier's batch** (``supplied_secure_element_enrol``): an SE supplier, named by the SE
  issuer through a mandate with the action ``se.supply``, registers the issuer's SEs row by row;
  each ends up exactly as ``keys.services.secure_element_enrol`` leaves it, plus the CASD public
  key on the SE, which is then handed to the Controlling Authority for certification.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from devices import services as device_services
from devices.models import SecureElementKind
from gp.card.manufacture import (
    MAX_TEXT,
    HandoverError,
    HandoverFormatError,
    WrappedIsdKeys,
    decode_wrapped,
    open_wrapped_isd_keys,
    parse_wrapped_isd_keys,
)
from gp.scp03 import StaticKeys
from keys import services as key_services
from keys.errors import KeysError, VaultError
from keys.models import ImportKey, ImportKeyStatus, KeySetStatus
from keys.vault import vault_open, vault_seal
from portal.errors import ConflictError, DomainError, InvalidError, NotFoundError
from tenants.access import Action, Actor, require, rule, visible_to
from tenants.models import Mandate, MandateAction, Organisation, OrgRole, OrgStatus

_HEX = re.compile(r"^[0-9A-Fa-f]+$")
MAX_PEM_CHARS = 4000
MAX_WRAPPED_TEXT = MAX_TEXT + 64  # base64 is shorter than hex; room for line breaks


class HandoverRefused(InvalidError):
    """A batch row whose wrapped keys or CASD key cannot be accepted (the message says why)."""

    code = "handover_refused"


class ImportKeyConflict(ConflictError):
    code = "import_key_conflict"


@rule(ImportKey)
def _import_key_rule(actor: Actor) -> Any:
    from django.db.models import Q

    # An issuer's own business: never visible on someone's behalf.
    return Q(owner=actor.subject) if actor.mandate is None else Q(pk__in=[])


def import_key_purpose(key_id: uuid.UUID | str) -> str:
    return f"import-key:{key_id}"


def _spki(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def import_key_pem(import_key: ImportKey) -> str:
    key = serialization.load_der_public_key(bytes(import_key.public_key))
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# --- import keys --------------------------------------------------------------------------------


def _issuer_for_itself(actor: Actor) -> Organisation:
    require(actor, Action.KEYS_MANAGE)
    if actor.on_behalf_of is not None:
        raise NotFoundError("Not found.")
    if not actor.org.has_role(OrgRole.SE_ISSUER):
        raise KeysError("Only an SE issuer has import keys.")
    return actor.org


def import_key_rotate(*, actor: Actor) -> ImportKey:
    """Generate the SE issuer's new current import key; the previous current one becomes retiring.

    Preconditions: the actor is an SE issuer acting for itself, with keys.manage. Effects: a P-256
    key pair, the private key sealed in the issuer's vault for ``import-key:<id>``, the public key
    published (``published_import_key``); a ``keyset:generate`` event naming the fingerprint.
    Batches wrapped to the retiring key still open until it is retired.
    """
    org = _issuer_for_itself(actor)
    private = ec.generate_private_key(ec.SECP256R1())
    der_public = _spki(private.public_key())
    fingerprint = hashlib.sha256(der_public).hexdigest()
    key_id = uuid.uuid4()
    sealed = vault_seal(
        org_id=org.pk,
        purpose=import_key_purpose(key_id),
        plaintext=private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    del private
    now = timezone.now()
    try:
        with transaction.atomic():
            superseded = list(
                ImportKey.objects.select_for_update()
                .filter(owner=org, status=ImportKeyStatus.CURRENT)
                .values_list("fingerprint", flat=True)
            )
            ImportKey.objects.filter(owner=org, status=ImportKeyStatus.CURRENT).update(
                status=ImportKeyStatus.RETIRING, superseded_at=now
            )
            key = ImportKey.objects.create(
                id=key_id,
                owner=org,
                public_key=der_public,
                fingerprint=fingerprint,
                sealed_private_key=sealed,
            )
            audit_record(
                actor=actor,
                tag=AuditTag.KEYSET_GENERATE,
                target=key,
                details={"import_key": fingerprint, "superseded": superseded},
            )
    except IntegrityError:
        raise ImportKeyConflict(
            "Another rotation of the import key ran at the same time; try again."
        ) from None
    return key


def import_key_retire(*, actor: Actor, fingerprint: str) -> ImportKey:
    """Retire a retiring import key: its private key is destroyed, batches wrapped to it no longer open.

    The current key is never retired directly (rotate first, so suppliers always have one).
    Compare-and-set on the status; a ``keyset:status`` event.
    """
    org = _issuer_for_itself(actor)
    fp = fingerprint.strip().lower() if isinstance(fingerprint, str) else ""
    key = ImportKey.objects.filter(owner=org, fingerprint=fp).first()
    if key is None:
        raise NotFoundError("No such import key.")
    if key.status == ImportKeyStatus.CURRENT:
        raise ImportKeyConflict("This is the current import key: rotate first, then retire it.")
    with transaction.atomic():
        done = ImportKey.objects.filter(pk=key.pk, status=ImportKeyStatus.RETIRING).update(
            status=ImportKeyStatus.RETIRED, sealed_private_key=b"", retired_at=timezone.now()
        )
        if not done:
            raise ImportKeyConflict("This import key is already retired.")
        audit_record(
            actor=actor,
            tag=AuditTag.KEYSET_STATUS,
            target=key,
            details={"import_key": key.fingerprint, "from": "retiring", "to": "retired"},
        )
    key.refresh_from_db()
    return key


def import_keys_of(actor: Actor) -> QuerySet[ImportKey]:
    """The acting SE issuer's import keys, newest first (public halves and states only)."""
    if actor.on_behalf_of is not None:
        raise NotFoundError("Not found.")
    return visible_to(ImportKey, actor, Action.ORG_VIEW).order_by("-created_at")


def published_import_key(issuer_slug: str) -> ImportKey:
    """The current import key of an active SE issuer, for anyone to wrap to (a public key).

    Platform-level read of public data; ``NotFoundError`` when the issuer does not exist, is not
    an active SE issuer, or has no import key yet — the same answer for each.
    """
    org = Organisation.objects.filter(slug=issuer_slug, status=OrgStatus.ACTIVE).first()
    if org is None or not org.has_role(OrgRole.SE_ISSUER):
        raise NotFoundError("No published import key for that SE issuer.")
    key = ImportKey.objects.filter(owner=org, status=ImportKeyStatus.CURRENT).first()
    if key is None:
        raise NotFoundError("No published import key for that SE issuer.")
    return key


# --- the vault path -------------------------------------------------------------------------------


def unwrap_isd_keys(
    *, issuer: Organisation, wrapped: WrappedIsdKeys, serial: str, isd_aid: bytes, kvn: int
) -> StaticKeys:
    """Open a wrapped ISD key set with the issuer's import key, inside the vault path.

    SERVER-INTERNAL: the result goes straight into a vault-sealed key set (``_enrol``); never
    return, render or log it. The import key is found by the id the blob names; it must be the
    issuer's current or retiring key. Raises ``HandoverRefused`` (never with key material).
    """
    key = (
        ImportKey.objects.filter(
            owner=issuer,
            fingerprint=wrapped.key_id.hex(),
            status__in=[ImportKeyStatus.CURRENT, ImportKeyStatus.RETIRING],
        )
        .only("id", "sealed_private_key")
        .first()
    )
    if key is None:
        raise HandoverRefused(
            "The ISD keys are wrapped to an import key this SE issuer does not accept (unknown or "
            "retired); fetch its current import key and wrap again.",
            fields={"wrapped_isd_keys": ["Unknown import key."]},
        )
    try:
        der = vault_open(
            org_id=issuer.pk, purpose=import_key_purpose(key.pk), blob=bytes(key.sealed_private_key)
        )
    except VaultError:
        raise HandoverRefused(
            "The SE issuer's import key is unavailable; ask it to rotate its import key."
        ) from None
    private = serialization.load_der_private_key(der, password=None)
    del der
    try:
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise HandoverRefused("The SE issuer's import key is unusable.")
        return open_wrapped_isd_keys(
            wrapped, private_key=private, sei=issuer.slug, serial=serial, isd_aid=isd_aid, kvn=kvn
        )
    except HandoverError as exc:
        raise HandoverRefused(f"Refused: {exc}.", fields={"wrapped_isd_keys": [str(exc)]}) from None
    finally:
        del private


# --- the supplier's batch -------------------------------------------------------------------------


def supply_mandate(*, actor: Actor, issuer_slug: str) -> Actor:
    """The actor with which an SE supplier writes for SE issuer ``issuer_slug``.

    Preconditions: the actor is an SE supplier acting for itself, whose member may manage devices;
    the issuer granted it an active mandate naming ``se.supply``. Anything else is 404, as if the
    issuer did not exist (it named you or it did not). Returns the supplier acting on the issuer's
    behalf under that mandate: audit events show both.
    """
    require(actor, Action.DEVICES_MANAGE)
    if actor.on_behalf_of is not None:
        raise NotFoundError("No such SE issuer.")
    if not actor.org.has_role(OrgRole.SE_SUPPLIER):
        raise device_services.DeviceError("Only an SE supplier uploads manufacturing batches.")
    candidates = (
        Mandate.objects.select_related("grantor")
        .filter(
            Mandate.active_q(),
            grantee=actor.org,
            grantor__slug=issuer_slug if isinstance(issuer_slug, str) else "",
            grantor__status=OrgStatus.ACTIVE,
        )
        .order_by("-created_at")
    )
    mandate = next((m for m in candidates if MandateAction.SE_SUPPLY in m.actions), None)
    if mandate is None or not mandate.grantor.has_role(OrgRole.SE_ISSUER):
        raise NotFoundError("No such SE issuer (or it has not named you as its SE supplier).")
    return Actor(
        user=actor.user,
        org=actor.org,
        member_role=actor.member_role,
        on_behalf_of=mandate.grantor,
        mandate=mandate,
    )


def casd_public_key_der(value: object) -> bytes:
    """A CASD public key given as an uncompressed P-256 point in hex or as SPKI PEM → SPKI DER."""
    bad = HandoverRefused(
        "casd_public_key must be an uncompressed EC P-256 point in hex (04‖X‖Y, 65 bytes) or a PEM "
        "'PUBLIC KEY' of an EC P-256 key.",
        fields={"casd_public_key": ["Not an EC P-256 public key."]},
    )
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_PEM_CHARS:
        raise bad
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
        elif _HEX.match(text) and len(text) == 130:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(text))
        else:
            raise bad
    except (ValueError, TypeError, UnicodeEncodeError):
        raise bad from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise bad
    return _spki(key)


@dataclass(frozen=True)
class SuppliedSecureElement:
    """One row's outcome: the enrolment, and what became of the CASD key's certification."""

    enrolment: key_services.SecureElementEnrolment
    casd: dict[str, Any]

    @property
    def pk(self) -> Any:
        return self.enrolment.secure_element.pk


def supplied_secure_element_enrol(
    *,
    actor: Actor,
    serial: str,
    isd_aid: str,
    kvn: int | None = None,
    wrapped_isd_keys: str = "",
    i_param: int | None = None,
    sequence_counter: int | None = None,
    casd_public_key: str = "",
    kind: str = "se",
    cplc: str = "",
    device_manufacturer: str = "",
    device_serial: str = "",
) -> SuppliedSecureElement:
    """One row of an SE supplier's batch: the issuer's SE, its ISD and its ISD key set.

    Preconditions: ``actor`` comes from ``supply_mandate`` (the supplier on the issuer's behalf).
    Steps: 1. check every field; 2. open the wrapped keys in the issuer's vault path, refusing
    keys whose KCVs do not match; 3. in one transaction, the SE (with its CASD public key), its
    ISD and the active key set sealed in the issuer's vault, audited; 4. after the commit, ask the
    Controlling Authority to certify the CASD key — an SE stays registered (uncertified) when no
    CA can, and ``casd`` says why. A TEE row (``kind: "tee"``) has no ISD key set: no
    ``wrapped_isd_keys``, ``kvn``, ``i_param`` or ``sequence_counter`` (refused when given, as in
    ``keys.services.check_isd_key_inputs``); its ``casd_public_key`` is the token's receive key.
    """
    issuer = actor.on_behalf_of
    if issuer is None or actor.mandate is None:
        raise NotFoundError("No such SE issuer.")
    key_services.check_isd_key_inputs(
        kind=kind,
        has_keys=bool(wrapped_isd_keys),
        kvn=kvn,
        i_param=i_param,
        sequence_counter=sequence_counter,
        keys_field="wrapped_isd_keys",
    )
    tee = kind == SecureElementKind.TEE
    if not tee:
        key_services.check_kvn(kvn)
        i_param = key_services.check_i_param(0x70 if i_param is None else i_param)
        key_services.check_sequence_counter(sequence_counter)
    serial = device_services.check_serial(serial)
    aid_hex = device_services.check_aid(isd_aid)
    casd_der = casd_public_key_der(casd_public_key) if casd_public_key else b""
    keys = None
    if not tee:
        assert kvn is not None
        try:
            wrapped = parse_wrapped_isd_keys(decode_wrapped(wrapped_isd_keys))
        except HandoverFormatError as exc:
            raise HandoverRefused(
                f"wrapped_isd_keys: {exc}.", fields={"wrapped_isd_keys": [str(exc)]}
            ) from None
        keys = unwrap_isd_keys(
            issuer=issuer, wrapped=wrapped, serial=serial, isd_aid=bytes.fromhex(aid_hex), kvn=kvn
        )
    with transaction.atomic():
        se = device_services.secure_element_register_supplied(
            actor=actor,
            serial=serial,
            kind=kind,
            isd_aid=aid_hex,
            casd_public_key=casd_der,
            cplc=cplc,
            device_manufacturer=device_manufacturer,
            device_serial=device_serial,
        )
        isd = se.security_domains.get(is_isd=True)
        keyset = None
        if keys is not None:
            assert kvn is not None and i_param is not None
            keyset = key_services._create(
                actor=actor,
                sd=isd,
                kvn=kvn,
                keys=keys,
                status=KeySetStatus.ACTIVE,
                sequence_counter=sequence_counter,
                i_param=i_param,
                tag=AuditTag.KEYSET_IMPORT,
            )
    del keys
    enrolment = key_services.SecureElementEnrolment(
        secure_element=se, isd=isd, keyset=keyset, device=se.device
    )
    casd = _certify_casd(actor=actor, se=se, casd_der=casd_der)
    return SuppliedSecureElement(enrolment=enrolment, casd=casd)


def secure_element_casd_record(*, actor: Actor, secure_element: Any, casd_der: bytes) -> dict[str, Any]:
    """The SE issuer registering an SE gives its CASD public key (generated inside the SE): keep it
    on the SE and hand it to the Controlling Authority. Returns the certification state (as a
    supplier batch row's ``casd``). The SE's registration stands whatever the CA answers."""
    from devices.models import SecureElement

    SecureElement.objects.filter(pk=secure_element.pk).update(casd_public_key=casd_der)
    secure_element.casd_public_key = casd_der
    return _certify_casd(actor=actor, se=secure_element, casd_der=casd_der)


def _certify_casd(*, actor: Actor, se: Any, casd_der: bytes) -> dict[str, Any]:
    """Hand the CASD key to the Controlling Authority (``keys.ca.casd_certify``), as the supplier."""
    if not casd_der:
        return {"state": "none", "detail": "No CASD public key in the row: the SE cannot be certified."}
    out: dict[str, Any] = {"fingerprint": hashlib.sha256(casd_der).hexdigest()}
    from keys.ca import casd_certify

    supplier = Actor(user=actor.user, org=actor.org, member_role=actor.member_role)
    try:
        cert = casd_certify(actor=supplier, secure_element=se, public_key=casd_der)
    except DomainError as exc:
        return {**out, "state": "uncertified", "detail": exc.message}
    return {
        **out,
        "state": "certified",
        "certificate": str(getattr(cert, "pk", "")),
        "serial": str(getattr(cert, "serial", "")),
    }
