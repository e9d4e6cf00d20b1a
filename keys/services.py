"""Writes of the keys app: key sets sealed in the owner's vault, and SE enrolment with ISD keys.

Every function is keyword-only; those that change what an organisation holds take the acting
``actor`` and write a ``keyset:*`` audit event in the same transaction. Audit details and log
lines carry key check values (KCVs) only — never key bytes, not even a prefix.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from devices import services as device_services
from devices.models import Device, SecureElement, SecureElementKind, SecurityDomain
from gp.scp03 import StaticKeys, kcv
from keys.errors import KeysError, KeySetConflict, VaultError
from keys.models import KeySet, KeySetStatus
from keys.policy import default_crypto_period_end
from keys.vault import vault_open, vault_seal
from portal.errors import NotFoundError
from tenants.access import Action, Actor, require
from tenants.models import Organisation

KEY_LENGTHS = (16, 24, 32)
KVN_MIN, KVN_MAX = 0x01, 0x7F
MAX_SEQUENCE_COUNTER = 0xFFFFFF

# Which status may follow which; everything else is refused. ``destroyed`` is final and wipes the
# sealed material (the KCVs stay, so history still reads).
TRANSITIONS: dict[str, frozenset[str]] = {
    KeySetStatus.PENDING: frozenset({KeySetStatus.ACTIVE, KeySetStatus.DESTROYED}),
    KeySetStatus.ACTIVE: frozenset({KeySetStatus.RETIRED, KeySetStatus.DESTROYED}),
    KeySetStatus.RETIRED: frozenset({KeySetStatus.ACTIVE, KeySetStatus.DESTROYED}),
    KeySetStatus.DESTROYED: frozenset(),
}


def purpose_of(keyset_id: uuid.UUID | str) -> str:
    """The vault purpose binding a key set's sealed blob to that key set."""
    return f"keyset:{keyset_id}"


def check_kvn(kvn: object) -> int:
    if not isinstance(kvn, int) or isinstance(kvn, bool) or not KVN_MIN <= kvn <= KVN_MAX:
        raise KeysError(
            "kvn must be an integer from 1 to 127 (0x01–0x7F).", fields={"kvn": ["Out of range."]}
        )
    return kvn


def check_i_param(i_param: object) -> int:
    if not isinstance(i_param, int) or isinstance(i_param, bool) or not 0 <= i_param <= 0xFF:
        raise KeysError("i_param must be one byte (0–255).", fields={"i_param": ["Out of range."]})
    return i_param


def check_sequence_counter(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEQUENCE_COUNTER:
        raise KeysError(
            "sequence_counter must be an integer from 0 to 0xFFFFFF (3 bytes).",
            fields={"sequence_counter": ["Out of range."]},
        )
    return value


def static_keys_from_hex(*, enc: object, mac: object, dek: object) -> StaticKeys:
    """Three AES keys from hex: 16, 24 or 32 bytes each, all the same length. Never echoes them."""
    raw: dict[str, bytes] = {}
    for name, value in (("enc", enc), ("mac", mac), ("dek", dek)):
        try:
            if not isinstance(value, str):
                raise ValueError
            raw[name] = bytes.fromhex(value.strip())
        except ValueError:
            raise KeysError(
                f"isd_keys.{name} must be a hex string.", fields={f"isd_keys.{name}": ["Not hex."]}
            ) from None
        if len(raw[name]) not in KEY_LENGTHS:
            raise KeysError(
                f"isd_keys.{name} must be an AES key of 16, 24 or 32 bytes; got {len(raw[name])} bytes.",
                fields={f"isd_keys.{name}": ["Wrong length."]},
            )
    if not len(raw["enc"]) == len(raw["mac"]) == len(raw["dek"]):
        raise KeysError(
            "Key-ENC, Key-MAC and Key-DEK must have the same length.", fields={"isd_keys": ["Mixed lengths."]}
        )
    return StaticKeys(enc=raw["enc"], mac=raw["mac"], dek=raw["dek"])


def _may_hold_keys_of(actor: Actor, sd: SecurityDomain) -> None:
    """Key sets go into the SD owner's vault: the owner itself, or its grantee under a keys.load
    mandate. For an ISD the owner is the SE's issuer. Anyone else: 404, as if the SD did not exist."""
    require(actor, Action.KEYS_MANAGE)
    if sd.owner_id != actor.subject.pk:
        raise NotFoundError("No such security domain.")
    if sd.is_isd and sd.secure_element.issuer_id != actor.subject.pk:
        raise NotFoundError("No such security domain.")


def _create(
    *,
    actor: Actor,
    sd: SecurityDomain,
    kvn: int,
    keys: StaticKeys,
    status: str,
    sequence_counter: int | None,
    i_param: int,
    tag: AuditTag,
) -> KeySet:
    if status not in (KeySetStatus.PENDING, KeySetStatus.ACTIVE):
        raise KeysError("A new key set is 'pending' or 'active'.", fields={"status": ["Invalid."]})
    keyset_id = uuid.uuid4()
    kcvs = {name: kcv(getattr(keys, name)).hex().upper() for name in ("enc", "mac", "dek")}
    created_at = timezone.now()
    crypto_period_end = default_crypto_period_end(created_at)
    try:
        with transaction.atomic():
            sealed = vault_seal(
                org_id=sd.owner_id, purpose=purpose_of(keyset_id), plaintext=keys.enc + keys.mac + keys.dek
            )
            keyset = KeySet.objects.create(
                id=keyset_id,
                owner_id=sd.owner_id,
                security_domain=sd,
                kvn=kvn,
                key_length=keys.key_length,
                sealed=sealed,
                kcv_enc=kcvs["enc"],
                kcv_mac=kcvs["mac"],
                kcv_dek=kcvs["dek"],
                status=status,
                sequence_counter=sequence_counter,
                i_param=i_param,
                created_at=created_at,
                crypto_period_end=crypto_period_end,
            )
            audit_record(
                actor=actor,
                tag=tag,
                target=keyset,
                details={
                    "sd": sd.aid,
                    "kvn": kvn,
                    "scp": keyset.scp,
                    "key_length": keys.key_length,
                    "crypto_period_end": crypto_period_end.isoformat(),
                    "status": status,
                    "kcv": kcvs,
                },
            )
    except IntegrityError:
        raise KeySetConflict(
            f"KVN {kvn:#04x} already holds a key set on this security domain; retire and destroy it, or use another KVN.",
            fields={"kvn": ["Taken."]},
        ) from None
    return keyset


def keyset_import(
    *,
    actor: Actor,
    security_domain: SecurityDomain,
    kvn: int,
    keys: StaticKeys,
    sequence_counter: int | None = None,
    i_param: int = 0x70,
    status: str = KeySetStatus.ACTIVE,
) -> KeySet:
    """Seal an existing SCP03 key set (e.g. a card's ISD keys) into the SD owner's vault.

    Preconditions: the actor acts for the SD's owner (the SE issuer for an ISD), itself or under a
    keys.load mandate; ``kvn`` 1–0x7F unused by a live key set of the SD.
    Effects: a KeySet with KCVs, its keys sealed for ``keyset:<id>``; a ``keyset:import`` event.
    """
    _may_hold_keys_of(actor, security_domain)
    return _create(
        actor=actor,
        sd=security_domain,
        kvn=check_kvn(kvn),
        keys=keys,
        status=status,
        sequence_counter=check_sequence_counter(sequence_counter),
        i_param=check_i_param(i_param),
        tag=AuditTag.KEYSET_IMPORT,
    )


def keyset_generate(
    *,
    actor: Actor,
    security_domain: SecurityDomain,
    kvn: int,
    key_length: int = 16,
    status: str = KeySetStatus.PENDING,
) -> KeySet:
    """Generate a fresh random key set in the SD owner's vault (for a job to PUT KEY on the card).

    Same preconditions as ``keyset_import``; starts ``pending`` until the job confirms the card
    holds it (``keyset_set_status`` pending → active). A ``keyset:generate`` event.
    """
    _may_hold_keys_of(actor, security_domain)
    if key_length not in KEY_LENGTHS:
        raise KeysError("key_length must be 16, 24 or 32.", fields={"key_length": ["Invalid."]})
    keys = StaticKeys(enc=os.urandom(key_length), mac=os.urandom(key_length), dek=os.urandom(key_length))
    return _create(
        actor=actor,
        sd=security_domain,
        kvn=check_kvn(kvn),
        keys=keys,
        status=status,
        sequence_counter=0,
        i_param=0x70,
        tag=AuditTag.KEYSET_GENERATE,
    )


def keyset_static_keys(*, keyset: KeySet) -> StaticKeys:
    """The key set's keys, opened from the vault. SERVER-INTERNAL: for workers compiling SCP
    scripts only — never return, render or log the result (its ``repr`` shows KCVs only).

    Raises ``VaultError`` if the key set was destroyed, shredded, or its blob moved or altered.
    """
    if keyset.status == KeySetStatus.DESTROYED:
        raise VaultError("This key set was destroyed.")
    plain = vault_open(org_id=keyset.owner_id, purpose=purpose_of(keyset.pk), blob=bytes(keyset.sealed))
    n = keyset.key_length
    if len(plain) != 3 * n:
        raise VaultError("The sealed key set has the wrong length.")
    return StaticKeys(enc=plain[:n], mac=plain[n : 2 * n], dek=plain[2 * n :])


def keyset_set_status(*, actor: Actor, keyset: KeySet, from_status: str, to_status: str) -> KeySet:
    """Compare-and-set the key set's status (``TRANSITIONS``); ``destroyed`` wipes the sealed keys.

    Raises ``KeysError`` for a transition that is never allowed, ``KeySetConflict`` when the key
    set is no longer in ``from_status`` (someone else moved it first). A ``keyset:status`` event.
    """
    require(actor, Action.KEYS_MANAGE)
    if keyset.owner_id != actor.subject.pk:
        raise NotFoundError("No such key set.")
    if to_status not in TRANSITIONS.get(from_status, frozenset()):
        raise KeysError(f"A key set does not go from '{from_status}' to '{to_status}'.")
    update: dict[str, object] = {"status": to_status}
    if to_status == KeySetStatus.DESTROYED:
        update["sealed"] = b""
    with transaction.atomic():
        try:
            with transaction.atomic():
                changed = KeySet.objects.filter(pk=keyset.pk, status=from_status).update(**update)
        except IntegrityError:
            raise KeySetConflict(
                "Another live key set of this security domain already uses this KVN."
            ) from None
        if not changed:
            raise KeySetConflict(f"The key set is no longer '{from_status}'; nothing was changed.")
        audit_record(
            actor=actor,
            tag=AuditTag.KEYSET_STATUS,
            target=keyset,
            details={"kvn": keyset.kvn, "from": from_status, "to": to_status},
        )
    keyset.refresh_from_db()
    return keyset


def keyset_set_sequence_counter(*, keyset: KeySet, value: int) -> None:
    """Record the next SCP03 sequence counter the card will use with this key set.

    Server-internal (workers after computing a precomputed script, or after reading the card's
    counter back): not an organisation's decision, so not audited.
    """
    value_checked = check_sequence_counter(value)
    if value_checked is None:
        raise KeysError("sequence_counter must be an integer.")
    KeySet.objects.filter(pk=keyset.pk).update(sequence_counter=value_checked)
    keyset.sequence_counter = value_checked


# --- enrolment: an SE, its ISD and the ISD key set, in one transaction -------------------------


@dataclass(frozen=True)
class SecureElementEnrolment:
    secure_element: SecureElement
    isd: SecurityDomain
    keyset: KeySet | None  # None for a TEE: it has no ISD key set (``secure_element_enrol``)
    device: Device | None
    casd: dict[str, Any] | None = None  # the CASD key's certification, when one was given


def check_isd_key_inputs(
    *,
    kind: str,
    has_keys: bool,
    kvn: object,
    i_param: object,
    sequence_counter: object,
    keys_field: str = "isd_keys",
) -> None:
    """An SE needs its ISD key set (keys and KVN); a TEE takes none (docs/tee-bridge.md §8.1).

    A TEE's ISD is only the issuer's name for the token: nothing on a token opens an SCP03
    session, so an ISD key set would sit unused in the issuer's vault — secret material with no
    purpose, which the vault does not keep. Giving one (or its SCP03 parameters: ``kvn``,
    ``i_param``, ``sequence_counter``) for a TEE is refused (400 ``isd_keys_not_for_tee``) rather
    than silently dropped, so a caller who thinks it registered an SE learns otherwise.
    """
    if kind == SecureElementKind.TEE:
        given = [
            name
            for name, present in (
                (keys_field, has_keys),
                ("kvn", kvn is not None),
                ("i_param", i_param is not None),
                ("sequence_counter", sequence_counter is not None),
            )
            if present
        ]
        if given:
            raise KeysError(
                "A TEE has no ISD key set (its security domains' keys live in its token): "
                f"leave out {', '.join(given)}.",
                code="isd_keys_not_for_tee",
                fields={name: ["Not for a TEE."] for name in given},
            )
        return
    missing = [name for name, present in ((keys_field, has_keys), ("kvn", kvn is not None)) if not present]
    if missing:
        raise KeysError(
            f"A secure element is registered with its ISD key set: give {' and '.join(missing)}.",
            code="isd_keys_required",
            fields={name: ["Required for an SE."] for name in missing},
        )


def secure_element_enrol(
    *,
    actor: Actor,
    serial: str,
    kind: str,
    isd_aid: str,
    keys: StaticKeys | None = None,
    kvn: int | None = None,
    i_param: int | None = None,
    sequence_counter: int | None = None,
    cplc: str = "",
    device_manufacturer: str = "",
    device_serial: str = "",
    supplier: Organisation | None = None,
) -> SecureElementEnrolment:
    """An SE issuer registers an SE with its ISD and imports the ISD key set into its vault — or a
    TEE with its ISD and no key set (``check_isd_key_inputs``: an SE needs ``keys`` and ``kvn``,
    ``i_param`` defaulting to 0x70; a TEE refuses all of them).

    All or nothing: the SE, its ISD, the active key set and the audit events commit together.
    Pairing with a device follows ``devices.services`` (both claims must name each other).
    """
    check_isd_key_inputs(
        kind=kind, has_keys=keys is not None, kvn=kvn, i_param=i_param, sequence_counter=sequence_counter
    )
    if kind != SecureElementKind.TEE:
        check_kvn(kvn)
        i_param = check_i_param(0x70 if i_param is None else i_param)
        check_sequence_counter(sequence_counter)
    with transaction.atomic():
        se = device_services.secure_element_register(
            actor=actor,
            device=None,
            serial=serial,
            kind=kind,
            isd_aid=isd_aid,
            supplier=supplier,
            cplc=cplc,
            device_manufacturer=device_manufacturer,
            device_serial=device_serial,
        )
        isd = se.security_domains.get(is_isd=True)
        keyset = None
        if keys is not None:
            assert kvn is not None and i_param is not None  # checked above
            keyset = keyset_import(
                actor=actor,
                security_domain=isd,
                kvn=kvn,
                keys=keys,
                sequence_counter=sequence_counter,
                i_param=i_param,
                status=KeySetStatus.ACTIVE,
            )
    return SecureElementEnrolment(secure_element=se, isd=isd, keyset=keyset, device=se.device)
