"""Writes of the devices app: enrolment of devices and secure elements, pairing, suspension.

Pairing rule (a device and the SE inside it are two parties' records):
- the device manufacturer's device may name its SE: ``se_issuer`` (the issuer's short name) and
  ``se_serial``;
- the SE issuer's SE may name its device: ``device_manufacturer`` and ``device_serial``;
- the SE is linked to the device when **both claims name each other** — whichever registration
  comes second makes the link, and an ``device:pair`` audit event records it. A one-sided claim
  never links: linking makes each party see the other's record (DESIGN §5), so neither may attach
  itself to someone else's hardware by naming it. A claim that does not (yet) match is kept, and
  the answer is the same whether the other record is missing or says something else.
"""

from __future__ import annotations

import datetime
import hashlib
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import IntegrityError, transaction

from audit.models import AuditTag
from audit.services import audit_record
from devices.identity import forget_identity
from devices.models import (
    Device,
    DeviceKind,
    DeviceStatus,
    SecureElement,
    SecureElementKind,
    SecurityDomain,
)
from portal.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from tenants.access import Action, Actor, require
from tenants.models import MandateAction, Organisation, OrgRole, slug_validator

ISD_PRIVILEGES = [
    "security_domain",
    "card_lock",
    "card_terminate",
    "card_reset",
    "cvm_management",
    "authorized_management",
    "global_delete",
    "global_lock",
    "global_registry",
]
SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
HEX_RE = re.compile(r"^(?:[0-9A-Fa-f]{2})*$")
MAX_PEM_CHARS = 4000


class DeviceError(InvalidError):
    code = "invalid_device"


class DeviceConflict(ConflictError):
    code = "device_conflict"


# --- input checks shared by the API, the pages and batch uploads ------------------------------


def check_serial(serial: object, what: str = "serial") -> str:
    if not isinstance(serial, str) or not SERIAL_RE.match(serial.strip()):
        raise DeviceError(
            f"A {what} is 1–64 letters, digits and . _ : - (starting with a letter or digit).",
            fields={what: ["Invalid serial."]},
        )
    return serial.strip()


def check_hex(value: object, what: str, *, min_bytes: int = 0, max_bytes: int) -> str:
    """Even-length hex of ``min_bytes``–``max_bytes`` bytes, returned upper-case."""
    if not isinstance(value, str) or not HEX_RE.match(value.strip()):
        raise DeviceError(f"{what} must be hexadecimal (pairs of 0-9 A-F).", fields={what: ["Not hex."]})
    value = value.strip().upper()
    n = len(value) // 2
    if not min_bytes <= n <= max_bytes:
        raise DeviceError(
            f"{what} must be {min_bytes}–{max_bytes} bytes; got {n}.", fields={what: ["Wrong length."]}
        )
    return value


def check_aid(value: object, what: str = "isd_aid") -> str:
    """An application identifier: 5–16 bytes (ISO/IEC 7816-5)."""
    return check_hex(value, what, min_bytes=5, max_bytes=16)


def check_slug(value: object, what: str) -> str:
    from django.core.exceptions import ValidationError

    if not isinstance(value, str):
        raise DeviceError(f"{what} is an organisation's short name.", fields={what: ["Invalid."]})
    try:
        slug_validator(value)
    except ValidationError:
        raise DeviceError(f"{what} is an organisation's short name.", fields={what: ["Invalid."]}) from None
    return value


END_OF_SERVICE_RANGE = (datetime.date(2000, 1, 1), datetime.date(2200, 12, 31))


def check_end_of_service(value: object) -> datetime.date | None:
    """A device's intended end of service: a date (or ``YYYY-MM-DD``), or nothing."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.date.fromisoformat(value.strip())
        except ValueError:
            value = None
    if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date):
        raise DeviceError(
            "end_of_service must be a date written YYYY-MM-DD.", fields={"end_of_service": ["Not a date."]}
        )
    low, high = END_OF_SERVICE_RANGE
    if not low <= value <= high:
        raise DeviceError(
            f"end_of_service must lie between {low.isoformat()} and {high.isoformat()}.",
            fields={"end_of_service": ["Out of range."]},
        )
    return value


def identity_key_id(pem: str) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo of an EC P-256 public key in PEM.

    Raises ``DeviceError`` for anything else (other curves, RSA, private keys, garbage).
    """
    bad = DeviceError(
        "identity_public_key must be a PEM 'PUBLIC KEY' (SubjectPublicKeyInfo) of an EC P-256 "
        "(secp256r1) key, as `agent init` prints it.",
        fields={"identity_public_key": ["Not an EC P-256 public key in PEM."]},
    )
    if not isinstance(pem, str) or not pem.strip() or len(pem) > MAX_PEM_CHARS:
        raise bad
    try:
        key = serialization.load_pem_public_key(pem.strip().encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise bad from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise bad
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _normalised_pem(pem: str) -> str:
    key = serialization.load_pem_public_key(pem.strip().encode("ascii"))
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


# --- pairing ----------------------------------------------------------------------------------


def _claims_match(device: Device, se: SecureElement) -> bool:
    return (
        se.device_id is None
        and bool(device.se_serial)
        and device.se_issuer_slug == se.issuer.slug
        and device.se_serial == se.serial
        and se.device_manufacturer_slug == device.manufacturer.slug
        and se.device_serial == device.serial
    )


def _pair(*, actor: Actor, device: Device, se: SecureElement) -> None:
    """Link ``se`` into ``device`` (claims already checked, inside the caller's transaction)."""
    linked = SecureElement.objects.filter(pk=se.pk, device__isnull=True).update(device=device)
    if not linked:
        return
    se.device = device
    audit_record(
        actor=actor,
        tag=AuditTag.DEVICE_PAIR,
        target=device,
        details={"device": device.serial, "se": se.serial, "issuer": se.issuer.slug},
        concerns=[device.manufacturer, se.issuer],
    )


def _pair_device(*, actor: Actor, device: Device) -> SecureElement | None:
    if not device.se_serial:
        return None
    se = (
        SecureElement.objects.select_related("issuer")
        .filter(issuer__slug=device.se_issuer_slug, serial=device.se_serial, device__isnull=True)
        .first()
    )
    if se is None or not _claims_match(device, se):
        return None
    _pair(actor=actor, device=device, se=se)
    return se


def _pair_secure_element(*, actor: Actor, se: SecureElement) -> Device | None:
    if not se.device_serial:
        return None
    device = (
        Device.objects.select_related("manufacturer")
        .filter(manufacturer__slug=se.device_manufacturer_slug, serial=se.device_serial)
        .first()
    )
    if device is None or not _claims_match(device, se):
        return None
    _pair(actor=actor, device=device, se=se)
    return device


# --- devices ----------------------------------------------------------------------------------


def device_register(
    *,
    actor: Actor,
    serial: str,
    kind: str,
    holder: Organisation | None = None,
    subscriber: Organisation | None = None,
    identity_public_key: str = "",
    key_id: str = "",
    se_issuer: str = "",
    se_serial: str = "",
    end_of_service: object = None,
) -> Device:
    """A device manufacturer enrols one of its devices.

    Preconditions: the acting organisation (never on someone's behalf) is a device manufacturer
    and the member may manage devices. ``identity_public_key`` is the EC P-256 public key in PEM;
    ``key_id``, when given (``agent init`` prints it), must equal the key's computed id.
    ``se_issuer``/``se_serial`` are the manufacturer's pairing claim (module docstring).
    Effects: one Device (and, when the SE issuer already named it, the SE linked to it), audited
    in the same transaction. Raises ``DeviceError`` (400) or ``DeviceConflict`` (409).
    """
    require(actor, Action.DEVICES_MANAGE)
    if actor.on_behalf_of is not None or not actor.org.has_role(OrgRole.DEVICE_MANUFACTURER):
        raise DeviceError("Only a device manufacturer registers devices, for itself.")
    serial = check_serial(serial)
    if kind not in DeviceKind.values:
        raise DeviceError(
            f"kind must be one of {', '.join(DeviceKind.values)}.", fields={"kind": ["Unknown kind."]}
        )
    computed = ""
    if identity_public_key:
        computed = identity_key_id(identity_public_key)
        identity_public_key = _normalised_pem(identity_public_key)
        if key_id and key_id.strip().lower() != computed:
            raise DeviceError(
                "key_id does not match identity_public_key (it is the SHA-256 of the key's DER SubjectPublicKeyInfo).",
                fields={"key_id": ["Does not match the key."]},
            )
    elif key_id:
        raise DeviceError("key_id needs identity_public_key.", fields={"key_id": ["Without a key."]})
    if bool(se_issuer) != bool(se_serial):
        raise DeviceError(
            "Name the SE by both se_issuer and se_serial, or neither.", fields={"se_serial": ["Incomplete."]}
        )
    if se_issuer:
        se_issuer = check_slug(se_issuer, "se_issuer")
        se_serial = check_serial(se_serial, "se_serial")
    eos = check_end_of_service(end_of_service)
    try:
        with transaction.atomic():
            device = Device.objects.create(
                serial=serial,
                kind=kind,
                manufacturer=actor.org,
                holder=holder,
                subscriber=subscriber,
                identity_public_key=identity_public_key,
                identity_key_id=computed or None,
                se_issuer_slug=se_issuer,
                se_serial=se_serial,
                end_of_service=eos,
            )
            audit_record(
                actor=actor,
                tag=AuditTag.DEVICE_REGISTER,
                target=device,
                details={
                    "serial": serial,
                    "kind": kind,
                    "key_id": computed,
                    **({"end_of_service": eos.isoformat()} if eos else {}),
                },
                concerns=[o for o in (holder, subscriber) if o],
            )
            _pair_device(actor=actor, device=device)
            if computed:
                # an earlier poll with this key may have cached "unknown key" for a minute
                transaction.on_commit(lambda: forget_identity(computed))
    except IntegrityError as exc:
        raise _device_conflict(exc, serial) from None
    return device


def _device_conflict(exc: IntegrityError, serial: str) -> DeviceConflict:
    text = str(exc).lower()
    if "identity_key_id" in text:
        return DeviceConflict(
            "This identity key is already enrolled for a device; each device has its own key.",
            fields={"identity_public_key": ["Already enrolled."]},
        )
    return DeviceConflict(
        f"You already registered a device with serial '{serial}'.", fields={"serial": ["Already registered."]}
    )


def _device_set_status(
    *, actor: Actor, device: Device, from_status: str, to_status: str, tag: AuditTag
) -> Device:
    require(actor, Action.DEVICES_MANAGE)
    if actor.on_behalf_of is not None or device.manufacturer_id != actor.org.pk:
        raise ForbiddenError("Only the device's manufacturer suspends or reactivates it.")
    with transaction.atomic():
        changed = Device.objects.filter(pk=device.pk, status=from_status).update(status=to_status)
        if not changed:
            device.refresh_from_db(fields=["status"])
            raise DeviceConflict(
                f"The device is {device.status}, not {from_status}; nothing was changed.",
                code="device_state",
            )
        device.status = to_status
        audit_record(actor=actor, tag=tag, target=device, details={"from": from_status, "to": to_status})
        # The agent endpoint caches identities with their status: drop this one once committed.
        key_id = device.identity_key_id
        transaction.on_commit(lambda: forget_identity(key_id))
    return device


def device_suspend(*, actor: Actor, device: Device) -> Device:
    """Active → suspended (compare-and-set): the agent endpoint then answers ``device_suspended``."""
    return _device_set_status(
        actor=actor,
        device=device,
        from_status=DeviceStatus.ACTIVE,
        to_status=DeviceStatus.SUSPENDED,
        tag=AuditTag.DEVICE_SUSPEND,
    )


def device_reactivate(*, actor: Actor, device: Device) -> Device:
    """Suspended → active (compare-and-set)."""
    return _device_set_status(
        actor=actor,
        device=device,
        from_status=DeviceStatus.SUSPENDED,
        to_status=DeviceStatus.ACTIVE,
        tag=AuditTag.DEVICE_REACTIVATE,
    )


def device_set_end_of_service(*, actor: Actor, device: Device, end_of_service: object) -> Device:
    """Record (or clear, with ``None``) the device's intended end of service.

    Preconditions: the actor acts for itself and is the device's manufacturer or the issuer of a
    secure element in it (both plan the device's life); the device is visible to it (callers
    resolve it with ``get_visible``). Others who see the device get 403. Effects: the date and a
    ``device:update`` event naming the old and new dates; key set assessments follow it.
    """
    require(actor, Action.DEVICES_MANAGE)
    org_id = actor.org.pk
    may = actor.on_behalf_of is None and (
        device.manufacturer_id == org_id or device.secure_elements.filter(issuer_id=org_id).exists()
    )
    if not may:
        raise ForbiddenError("Only the device's manufacturer or its SE issuer sets its end of service.")
    eos = check_end_of_service(end_of_service)
    with transaction.atomic():
        old = Device.objects.select_for_update().values_list("end_of_service", flat=True).get(pk=device.pk)
        Device.objects.filter(pk=device.pk).update(end_of_service=eos)
        audit_record(
            actor=actor,
            tag=AuditTag.DEVICE_UPDATE,
            target=device,
            details={
                "end_of_service": {
                    "from": old.isoformat() if old else None,
                    "to": eos.isoformat() if eos else None,
                }
            },
            # the manufacturer and every SE issuer plan with this date
            concerns={device.manufacturer_id, *device.secure_elements.values_list("issuer_id", flat=True)},
        )
    device.end_of_service = eos
    return device


# --- secure elements --------------------------------------------------------------------------


def secure_element_register(
    *,
    actor: Actor,
    device: Device | None,
    serial: str,
    kind: str,
    isd_aid: str,
    supplier: Organisation | None = None,
    cplc: str = "",
    device_manufacturer: str = "",
    device_serial: str = "",
) -> SecureElement:
    """An SE issuer records an SE (or TEE) it issues, with its Issuer Security Domain.

    ``device`` links directly and is for platform code that vouches for both sides (the demo
    seed); enrolment passes ``device=None`` and the issuer's pairing claim
    ``device_manufacturer``/``device_serial`` (module docstring). Keys: ``keys.services``.
    """
    require(actor, Action.DEVICES_MANAGE)
    if actor.on_behalf_of is not None or not actor.org.has_role(OrgRole.SE_ISSUER):
        raise DeviceError("Only an SE issuer registers secure elements, for itself.")
    return _secure_element_create(
        actor=actor,
        issuer=actor.org,
        supplier=supplier,
        device=device,
        serial=serial,
        kind=kind,
        isd_aid=isd_aid,
        cplc=cplc,
        device_manufacturer=device_manufacturer,
        device_serial=device_serial,
    )


def secure_element_register_supplied(
    *,
    actor: Actor,
    serial: str,
    kind: str,
    isd_aid: str,
    casd_public_key: bytes = b"",
    cplc: str = "",
    device_manufacturer: str = "",
    device_serial: str = "",
) -> SecureElement:
    """An SE supplier records an SE it made for an SE issuer, from its manufacturing batch.

    Preconditions: ``actor`` is the supplier acting on behalf of the issuer under an active mandate
    naming ``se.supply`` (``keys.handover.supply_mandate`` resolves it); ``casd_public_key`` is
    the CASD's SubjectPublicKeyInfo (DER), already checked. Effects: as ``secure_element_register``
    with the issuer as the SE's issuer and the supplier as its supplier; the issuer's pairing
    claim comes from the supplier's row.
    """
    mandate = actor.mandate
    if mandate is None or MandateAction.SE_SUPPLY not in mandate.actions or actor.on_behalf_of is None:
        raise NotFoundError("No such SE issuer.")
    if not actor.org.has_role(OrgRole.SE_SUPPLIER) or not actor.on_behalf_of.has_role(OrgRole.SE_ISSUER):
        raise DeviceError("Only an SE supplier uploads secure elements, for an SE issuer that named it.")
    return _secure_element_create(
        actor=actor,
        issuer=actor.on_behalf_of,
        supplier=actor.org,
        device=None,
        serial=serial,
        kind=kind,
        isd_aid=isd_aid,
        cplc=cplc,
        device_manufacturer=device_manufacturer,
        device_serial=device_serial,
        casd_public_key=casd_public_key,
    )


def _secure_element_create(
    *,
    actor: Actor,
    issuer: Organisation,
    supplier: Organisation | None,
    device: Device | None,
    serial: str,
    kind: str,
    isd_aid: str,
    cplc: str,
    device_manufacturer: str,
    device_serial: str,
    casd_public_key: bytes = b"",
) -> SecureElement:
    serial = check_serial(serial)
    if kind not in SecureElementKind.values:
        raise DeviceError("kind must be 'se' or 'tee'.", fields={"kind": ["Unknown kind."]})
    isd_aid = check_aid(isd_aid)
    cplc = check_hex(cplc or "", "cplc", max_bytes=64) if cplc else ""
    if bool(device_manufacturer) != bool(device_serial):
        raise DeviceError(
            "Name the device by both manufacturer and serial, or neither.", fields={"device": ["Incomplete."]}
        )
    if device_manufacturer:
        device_manufacturer = check_slug(device_manufacturer, "device.manufacturer")
        device_serial = check_serial(device_serial, "device.serial")
    try:
        with transaction.atomic():
            se = SecureElement.objects.create(
                device=device,
                kind=kind,
                issuer=issuer,
                supplier=supplier,
                serial=serial,
                cplc=cplc,
                device_manufacturer_slug=device_manufacturer,
                device_serial=device_serial,
                casd_public_key=casd_public_key,
            )
            SecurityDomain.objects.create(
                secure_element=se, aid=isd_aid, owner=issuer, is_isd=True, privileges=list(ISD_PRIVILEGES)
            )
            concerns = [o for o in (issuer, supplier, device.manufacturer if device else None) if o]
            audit_record(
                actor=actor,
                tag=AuditTag.SE_REGISTER,
                target=se,
                details={"serial": serial},
                concerns=concerns,
            )
            if device is None:
                _pair_secure_element(actor=actor, se=se)
    except IntegrityError:
        raise DeviceConflict(
            f"{issuer.name} already has a secure element with serial '{serial}'."
            if issuer.pk != actor.org.pk
            else f"You already registered a secure element with serial '{serial}'.",
            fields={"serial": ["Already registered."]},
        ) from None
    return se


def security_domain_record(
    *, actor: Actor, secure_element: SecureElement, aid: str, owner: Organisation, privileges: list[str]
) -> SecurityDomain:
    """The SE issuer records a supplementary SD for ``owner`` under the ISD (the card work comes with jobs)."""
    if actor.mandate is not None and MandateAction.SD_CREATE not in actor.mandate.actions:
        # acting on behalf without the mandate action: the grantor's card is not the actor's
        raise NotFoundError("Not found.")
    if secure_element.issuer_id != actor.subject.pk:
        raise DeviceError("Only the SE's issuer (or its mandated TSM) records its security domains.")
    with transaction.atomic():
        isd = SecurityDomain.objects.get(secure_element=secure_element, is_isd=True)
        sd = SecurityDomain.objects.create(
            secure_element=secure_element, aid=aid, owner=owner, parent=isd, privileges=privileges
        )
        audit_record(
            actor=actor,
            tag=AuditTag.SD_REGISTER,
            target=sd,
            details={"aid": aid, "owner": owner.slug},
            concerns=[owner],
        )
    return sd
