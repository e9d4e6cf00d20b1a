"""Service master keys and the session keys derived from them (DESIGN §6, docs/session-keys.md).

The provider (the SD's owner) puts its master key on the SE itself (PUT KEY, KVN 72 KID 01, in its
own SCP03 session) and either deposits a copy in its Tessera vault (custody ``portal``) so its back
end can ask ``POST …/security-domains/<id>/session-keys/``, or registers its KCV only (custody
``provider``) and derives with its own tooling (``tessera-provider session-key``). The derived key
is the provider's own key material returned to the provider alone; audit events carry the service,
the epoch and the master key's KCV, never a key.
"""

from __future__ import annotations

import os

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from devices.models import SecureElementKind, SecurityDomain
from gp.errors import EncodeError
from gp.scp03 import kcv as aes_kcv
from gp.sessionkeys import MASTER_KEY_KVN, check_epoch, check_service, derive_session_key
from keys.errors import KeysError, VaultError
from keys.models import KeyCustody, MasterKeyStatus, ServiceMasterKey
from keys.services import _may_hold_keys_of
from keys.vault import vault_open, vault_seal
from portal.errors import ConflictError, NotFoundError
from tenants.access import Action, Actor, require

__all__ = ["master_key_purpose", "master_key_register", "session_key_derive"]

KEY_LENGTHS = (16, 24, 32)


class MasterKeyProviderHeld(ConflictError):
    code = "master_key_provider_held"


class MasterKeyOnTee(ConflictError):
    """A TEE's SD keys are the token's: the token-ops jobs record them (docs/tee-bridge.md §8.3)."""

    code = "master_key_on_tee"


def master_key_purpose(key_id: object) -> str:
    return f"masterkey:{key_id}"


def _check_kcv(value: str) -> str:
    try:
        if len(bytes.fromhex(value)) != 3:
            raise ValueError
    except ValueError:
        raise KeysError("kcv must be 3 bytes in hex (6 digits).", fields={"kcv": ["Invalid."]}) from None
    return value.upper()


def master_key_register(
    *,
    actor: Actor,
    security_domain: SecurityDomain,
    key: bytes | None = None,
    kcv: str | None = None,
    key_length: int = 16,
) -> ServiceMasterKey:
    """Record the SD's service master key; the previous active one (if any) is retired and wiped.

    Preconditions: the actor acts for the SD's owner itself (never on behalf: the master key is the
    owner's alone); exactly one of ``key`` (deposit in the owner's vault, custody ``portal``) or
    ``kcv`` (custody ``provider``: KCV only, with ``key_length``). The SD is on an SE: on a TEE
    the SD's master keys are the keys in its token, which only the token-ops jobs put there and
    record (``jobs.tee``) — a deposit would record a key the token does not hold, so it is
    refused with 409 ``master_key_on_tee`` (after the ownership checks: others still get 404).
    Effects: a ServiceMasterKey; a ``masterkey:register`` event with KCV, custody and KVN.
    """
    _may_hold_keys_of(actor, security_domain)
    if actor.on_behalf_of is not None:
        raise NotFoundError("No such security domain.")
    if security_domain.secure_element.kind == SecureElementKind.TEE:
        raise MasterKeyOnTee(
            "This security domain is on a TEE: its keys live in the device's token and are recorded "
            "by the jobs that put them there. Load a key with a load_keys_confidential job (your "
            "own envelope) or rotate_keys, not by depositing one."
        )
    if (key is None) == (kcv is None):
        raise KeysError("Give either the master key (portal custody) or its KCV (provider custody).")
    if key is not None:
        if len(key) not in KEY_LENGTHS:
            raise KeysError(
                "The master key must be an AES key of 16, 24 or 32 bytes.", fields={"key": ["Length."]}
            )
        custody, key_length, check = KeyCustody.PORTAL, len(key), aes_kcv(key).hex().upper()
    else:
        if key_length not in KEY_LENGTHS:
            raise KeysError("key_length must be 16, 24 or 32.", fields={"key_length": ["Invalid."]})
        custody, check = KeyCustody.PROVIDER, _check_kcv(kcv or "")
    now = timezone.now()
    try:
        with transaction.atomic():
            ServiceMasterKey.objects.filter(
                security_domain=security_domain, status=MasterKeyStatus.ACTIVE
            ).update(status=MasterKeyStatus.RETIRED, retired_at=now, sealed=b"")
            mk = ServiceMasterKey.objects.create(
                owner=security_domain.owner,
                security_domain=security_domain,
                kvn=MASTER_KEY_KVN,
                key_length=key_length,
                custody=custody,
                kcv=check,
            )
            if key is not None:
                mk.sealed = vault_seal(org_id=mk.owner_id, purpose=master_key_purpose(mk.pk), plaintext=key)
                mk.save(update_fields=["sealed"])
            audit_record(
                actor=actor,
                tag=AuditTag.MASTERKEY_REGISTER,
                target=security_domain,
                details={"kcv": check, "custody": custody, "kvn": MASTER_KEY_KVN, "key_length": key_length},
            )
    except IntegrityError:
        raise ConflictError("Another master key was registered at the same time; try again.") from None
    return mk


def session_key_derive(
    *, actor: Actor, security_domain: SecurityDomain, service: object, epoch: object
) -> tuple[ServiceMasterKey, bytes]:
    """The session key the SE derives for ``service``/``epoch`` (gp.sessionkeys), from the vault copy.

    Preconditions: the actor acts for the master key's owner itself (anyone else, or on behalf:
    404 as if there were no master key); its custody is ``portal`` (``provider``: 409
    ``master_key_provider_held``: derive it with the provider's own tooling).
    Effects: a ``sessionkey:derive`` event (service, epoch, master key KCV). Returns the key: the
    caller hands it to the owner and nowhere else.
    """
    require(actor, Action.KEYS_MANAGE)
    try:
        name = check_service(service).decode()
    except EncodeError as e:
        raise KeysError(str(e), fields={"service": ["Invalid."]}, code="invalid_service") from None
    try:
        at = check_epoch(epoch)
    except EncodeError as e:
        raise KeysError(str(e), fields={"epoch": ["Invalid."]}, code="invalid_epoch") from None
    mk = (
        ServiceMasterKey.objects.filter(security_domain=security_domain, status=MasterKeyStatus.ACTIVE)
        .select_related("security_domain__secure_element")
        .first()
    )
    if mk is None or actor.on_behalf_of is not None or mk.owner_id != actor.org.pk:
        raise NotFoundError("This security domain has no service master key of yours.", code="no_master_key")
    if mk.custody != KeyCustody.PORTAL:
        raise MasterKeyProviderHeld(
            "The master key is held by the provider only; derive the session key with its own tooling "
            "(tessera-provider session-key)."
        )
    try:
        se_id = bytes.fromhex(mk.security_domain.secure_element.serial)
    except ValueError:
        raise ConflictError("The secure element's serial number is not hex.", code="bad_se_serial") from None
    master = vault_open(org_id=mk.owner_id, purpose=master_key_purpose(mk.pk), blob=bytes(mk.sealed))
    if len(master) != mk.key_length:
        raise VaultError("The sealed master key has the wrong length.")
    try:
        key = derive_session_key(master, service=name, epoch=at, se_id=se_id)
    except EncodeError:
        raise ConflictError(
            "The secure element's serial number is not 1-16 bytes.", code="bad_se_serial"
        ) from None
    with transaction.atomic():
        audit_record(
            actor=actor,
            tag=AuditTag.SESSIONKEY_DERIVE,
            target=security_domain,
            details={"service": name, "epoch": at, "master_key_kcv": mk.kcv},
        )
    return mk, key


def new_master_key(length: int = 16) -> bytes:
    """A fresh random master key for the provider's tooling to put on the card and deposit."""
    return os.urandom(length)
