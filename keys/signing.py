"""Who signs for a certificate authority: a tiny ``Signer`` interface and its vault implementation.

Everything the CA signs (its root certificate, leaf certificates, CRLs) is assembled around a
signature computed by a ``Signer``, so a signer never has to hand out a private key object: the
same code path serves a key sealed in the vault (``VaultSigner``) and a key that never leaves a
PKCS#11 token (``keys.pkcs11.Pkcs11Signer``, issue 5 item 2).

A CA row names its signer with ``signer_ref``: ``"vault"`` (the private key is sealed in the CA
organisation's vault for ``ca-root:<id>``), ``"pkcs11:<label>"`` (a non-extractable key pair in
the token configured by ``TESSERA_PKCS11_*``, made by ``manage.py vault_pkcs11_init --ca-key
<label>``), or ``"<scheme>:<reference>"`` for another backend. A backend registers itself with ``register_signer_backend(scheme, load=..., create=...)``; when a
scheme is unknown, ``keys.<scheme>`` is imported once so that module can register it.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keys.errors import VaultError
from keys.vault import vault_open, vault_seal

VAULT = "vault"


class Signer(Protocol):
    """A P-256 key that signs: ``sign`` answers a DER ECDSA-with-SHA-256 signature of ``data``."""

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


def ca_purpose(ca_id: uuid.UUID | str) -> str:
    """The vault purpose binding a sealed CA private key to that CA."""
    return f"ca-root:{ca_id}"


class VaultSigner:
    """A CA private key sealed in the owner organisation's vault.

    The key is opened inside ``sign`` and dropped when the call returns: nothing holds it between
    calls (no attribute, no module global, no cache). ``public_key`` needs no vault access.
    """

    def __init__(
        self, *, org_id: uuid.UUID | str, ca_id: uuid.UUID | str, sealed: bytes, public_der: bytes
    ) -> None:
        self._org_id = org_id
        self._purpose = ca_purpose(ca_id)
        self._sealed = bytes(sealed)
        self._public = serialization.load_der_public_key(bytes(public_der))
        if not isinstance(self._public, ec.EllipticCurvePublicKey) or self._public.curve.name != "secp256r1":
            raise VaultError("A CA key is an ECDSA P-256 key.")

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public  # type: ignore[return-value]

    def sign(self, data: bytes) -> bytes:
        private = _load_private(vault_open(org_id=self._org_id, purpose=self._purpose, blob=self._sealed))
        try:
            if private.public_key().public_numbers() != self._public.public_numbers():  # type: ignore[union-attr]
                raise VaultError("The sealed CA key does not match the CA's public key.")
            return private.sign(bytes(data), ec.ECDSA(hashes.SHA256()))
        finally:
            del private

    def __repr__(self) -> str:
        return f"VaultSigner({self._purpose})"


def _load_private(der: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        raise VaultError("The sealed CA key is not a private key.") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise VaultError("The sealed CA key is not an ECDSA P-256 key.")
    return key


@dataclass(frozen=True)
class NewKey:
    """What creating a CA key yields: how to find it again, and a signer for the root certificate."""

    signer_ref: str
    sealed: bytes  # the vault blob, or b"" when the key lives elsewhere (a token)
    public_der: bytes
    signer: Signer


def _vault_create(*, org_id: uuid.UUID | str, ca_id: uuid.UUID | str, reference: str) -> NewKey:
    private = ec.generate_private_key(ec.SECP256R1())
    try:
        der = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public_der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    finally:
        del private
    sealed = vault_seal(org_id=org_id, purpose=ca_purpose(ca_id), plaintext=der)
    del der
    signer = VaultSigner(org_id=org_id, ca_id=ca_id, sealed=sealed, public_der=public_der)
    return NewKey(signer_ref=VAULT, sealed=sealed, public_der=public_der, signer=signer)


def _vault_load(
    *, org_id: uuid.UUID | str, ca_id: uuid.UUID | str, reference: str, sealed: bytes, public_der: bytes
) -> Signer:
    return VaultSigner(org_id=org_id, ca_id=ca_id, sealed=sealed, public_der=public_der)


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pkcs11_load(
    *, org_id: uuid.UUID | str, ca_id: uuid.UUID | str, reference: str, sealed: bytes, public_der: bytes
) -> Signer:
    """``pkcs11:<label>``: the key pair ``label`` in the token of ``TESSERA_PKCS11_*``."""
    from keys.pkcs11 import DEFAULT_CA_KEY_LABEL, pkcs11_signer

    signer = pkcs11_signer(reference or DEFAULT_CA_KEY_LABEL)
    if public_der and _spki(signer.public_key()) != bytes(public_der):
        raise VaultError("The token's key pair is not this CA's key.")
    return signer


def _pkcs11_create(*, org_id: uuid.UUID | str, ca_id: uuid.UUID | str, reference: str) -> NewKey:
    """The key pair is generated in the token beforehand (``manage.py vault_pkcs11_init --ca-key
    <label>``), non-extractable; the CA takes it by its label."""
    from keys.pkcs11 import DEFAULT_CA_KEY_LABEL

    label = reference or DEFAULT_CA_KEY_LABEL
    signer = _pkcs11_load(org_id=org_id, ca_id=ca_id, reference=label, sealed=b"", public_der=b"")
    return NewKey(
        signer_ref=f"pkcs11:{label}", sealed=b"", public_der=_spki(signer.public_key()), signer=signer
    )


CreateFn = Callable[..., NewKey]
LoadFn = Callable[..., Signer]
_BACKENDS: dict[str, tuple[CreateFn, LoadFn]] = {
    VAULT: (_vault_create, _vault_load),
    "pkcs11": (_pkcs11_create, _pkcs11_load),
}


def register_signer_backend(scheme: str, *, create: CreateFn, load: LoadFn) -> None:
    """Make ``"<scheme>:<reference>"`` usable as a CA's ``signer_ref``.

    ``create(org_id=, ca_id=, reference=)`` generates a P-256 key (non-extractable where the
    backend allows) and answers a ``NewKey``; ``load(org_id=, ca_id=, reference=, sealed=,
    public_der=)`` answers a ``Signer`` for an existing key.
    """
    _BACKENDS[scheme] = (create, load)


def _backend(scheme: str) -> tuple[CreateFn, LoadFn]:
    if scheme not in _BACKENDS and scheme.isidentifier():
        try:
            importlib.import_module(f"keys.{scheme}")
        except ImportError:
            pass
    try:
        return _BACKENDS[scheme]
    except KeyError:
        raise VaultError(f"No CA signer backend '{scheme}' is available in this process.") from None


def _split(signer_ref: str) -> tuple[str, str]:
    scheme, _, reference = signer_ref.partition(":")
    return scheme, reference


def signer_create(*, org_id: uuid.UUID | str, ca_id: uuid.UUID | str, signer_ref: str = VAULT) -> NewKey:
    """Generate a CA key with the backend ``signer_ref`` names (``vault`` or ``<scheme>:<ref>``)."""
    scheme, reference = _split(signer_ref)
    create, _load = _backend(scheme)
    return create(org_id=org_id, ca_id=ca_id, reference=reference)


def signer_load(
    *, org_id: uuid.UUID | str, ca_id: uuid.UUID | str, signer_ref: str, sealed: bytes, public_der: bytes
) -> Signer:
    scheme, reference = _split(signer_ref)
    _create, load = _backend(scheme)
    return load(
        org_id=org_id, ca_id=ca_id, reference=reference, sealed=bytes(sealed), public_der=bytes(public_der)
    )
