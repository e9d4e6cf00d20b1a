"""Key reception by derivation: how Tessera sends a secret key into a device's PKCS#11 token.

Released OP-TEE (PKCS#11 TA) and Debian's SoftHSM 2.6.1 share no C_UnwrapKey mechanism, so the key
is not *unwrapped* but *derived* inside the token (docs/tee-bridge.md §3, research tee-bridge §7.2):

Sender (this module, with ``cryptography``), for a key ``K`` of 16, 24 or 32 bytes, a label ``N``
(the token object's CKA_LABEL, e.g. ``tessera/sd/A000000151535001/72``) and the device's receive
key ``Q`` (P-256, uncompressed point, 65 bytes)::

    e, E  = a fresh ephemeral P-256 key pair; E uncompressed (65 bytes)
    Z     = ECDH(e, Q).x                                          32 bytes
    H     = SHA-256("tessera-kek/v1" ‖ E ‖ Q ‖ len(N) ‖ N)         32 bytes (len: 1 byte)
    KEK   = AES-256-ECB-Encrypt_Z(H)                              32 bytes
    W     = AES-256-ECB-Decrypt_KEK(K ‖ 00…)                      K zero-padded to a 16-byte multiple
    T     = AES-CMAC_K("tessera-kc/v1" ‖ E ‖ Q ‖ len(N) ‖ N ‖ W)   16 bytes

Device (``agent.pkcs11``), every step inside the token, intermediate objects session-only:

    Zo  = C_DeriveKey(receive_priv, CKM_ECDH1_DERIVE{CKD_NULL, no shared data, E}, AES, VALUE_LEN 32)
    KEKo= C_DeriveKey(Zo,   CKM_AES_ECB_ENCRYPT_DATA(H), AES, VALUE_LEN 32)
    Ko  = C_DeriveKey(KEKo, CKM_AES_ECB_ENCRYPT_DATA(W), AES, VALUE_LEN len(K))   → K
    require C_Sign(Ko, CKM_AES_CMAC, kc message) == T   (constant-time compare), else destroy Ko

then Ko is copied to a token object (CKA_TOKEN) and every session object is destroyed. A tampered
E, W, N or T, or an envelope made for another device, fails the tag and leaves nothing behind.

Each KEK encrypts one key once (E is fresh per envelope), which is what makes ECB key transport
sound here; the tag is a key-confirmation MAC under the received key itself.

No Django: the portal and the agent both import this module.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import cmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gp.errors import GPError

__all__ = [
    "KC_CONTEXT",
    "KEK_CONTEXT",
    "KEY_LENGTHS",
    "ENVELOPE_VERSION",
    "Envelope",
    "EnvelopeError",
    "check_label",
    "kc_message",
    "kek_input",
    "master_key_label",
    "point_bytes",
    "receive_in_software",
    "wrap_for_token",
]

ENVELOPE_VERSION = "tessera-tokenwrap/1"
KEK_CONTEXT = b"tessera-kek/v1"
KC_CONTEXT = b"tessera-kc/v1"
KEY_LENGTHS = (16, 24, 32)
POINT_LENGTH = 65
TAG_LENGTH = 16
LABEL_MAX = 64
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,63}")
_HEX_RE = re.compile(r"[0-9A-Fa-f]*")


class EnvelopeError(GPError):
    """A malformed envelope, or one that fails its key confirmation."""


def check_label(label: object) -> bytes:
    """A token object label: 1-64 characters of ``A-Z a-z 0-9 . _ / : -`` (ASCII)."""
    if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
        raise EnvelopeError("label must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '/', ':', '-'")
    return label.encode("ascii")


def master_key_label(sd_aid: bytes | str, kvn: int) -> str:
    """The label of an SD's key of version ``kvn`` in the token: ``tessera/sd/<AID>/<KVN hex>``."""
    aid = bytes.fromhex(sd_aid) if isinstance(sd_aid, str) else bytes(sd_aid)
    if not 5 <= len(aid) <= 16:
        raise EnvelopeError("an SD AID is 5 to 16 bytes")
    if not 0 <= kvn <= 0x7F:
        raise EnvelopeError("key version must be 00..7F")
    return f"tessera/sd/{aid.hex().upper()}/{kvn:02X}"


def point_bytes(public_key: ec.EllipticCurvePublicKey | bytes) -> bytes:
    """A P-256 public key as its 65-byte uncompressed point (checked to be on the curve)."""
    if isinstance(public_key, bytes | bytearray):
        data = bytes(public_key)
        if len(data) != POINT_LENGTH or data[0] != 0x04:
            raise EnvelopeError("a P-256 point is 65 bytes, 04 ‖ X ‖ Y")
        try:
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)
        except ValueError:
            raise EnvelopeError("the point is not on P-256") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise EnvelopeError("the receive key must be a P-256 public key")
    return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _framed(label: bytes) -> bytes:
    return bytes([len(label)]) + label


def kek_input(ephemeral: bytes, recipient: bytes, label: str) -> bytes:
    """H = SHA-256("tessera-kek/v1" ‖ E ‖ Q ‖ len(N) ‖ N): the data of the first ENCRYPT_DATA step."""
    return hashlib.sha256(KEK_CONTEXT + ephemeral + recipient + _framed(check_label(label))).digest()


def kc_message(ephemeral: bytes, recipient: bytes, label: str, wrapped: bytes) -> bytes:
    """The key-confirmation message: "tessera-kc/v1" ‖ E ‖ Q ‖ len(N) ‖ N ‖ W."""
    return KC_CONTEXT + ephemeral + recipient + _framed(check_label(label)) + wrapped


def _ecb(key: bytes, data: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 - key transport, one block per use (module doc)
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def _cmac(key: bytes, data: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


@dataclass(frozen=True, slots=True)
class Envelope:
    """What Tessera sends: the label, E, W, T and the key length (never the key)."""

    label: str
    ephemeral: bytes  # E, 65 bytes
    wrapped: bytes  # W, 16 or 32 bytes
    tag: bytes  # T, 16 bytes
    key_length: int

    def __post_init__(self) -> None:
        check_label(self.label)
        if self.key_length not in KEY_LENGTHS:
            raise EnvelopeError("key_length must be 16, 24 or 32")
        if len(self.ephemeral) != POINT_LENGTH or self.ephemeral[:1] != b"\x04":
            raise EnvelopeError("ephemeral must be a 65-byte uncompressed P-256 point")
        if len(self.wrapped) != -(-self.key_length // 16) * 16:
            raise EnvelopeError("wrapped must be the key length rounded up to 16 bytes")
        if len(self.tag) != TAG_LENGTH:
            raise EnvelopeError("tag must be 16 bytes")

    def to_json(self) -> dict[str, Any]:
        return {
            "v": ENVELOPE_VERSION,
            "label": self.label,
            "key_length": self.key_length,
            "ephemeral": self.ephemeral.hex().upper(),
            "wrapped": self.wrapped.hex().upper(),
            "tag": self.tag.hex().upper(),
        }

    @classmethod
    def from_json(cls, data: object) -> Envelope:
        """Parse and check an envelope; :class:`EnvelopeError` names what is wrong."""
        if not isinstance(data, dict):
            raise EnvelopeError("an envelope is a JSON object")
        fields = {"v", "label", "key_length", "ephemeral", "wrapped", "tag"}
        if set(data) != fields:
            raise EnvelopeError(f"an envelope has exactly the fields {', '.join(sorted(fields))}")
        if data["v"] != ENVELOPE_VERSION:
            raise EnvelopeError(f"unknown envelope version {data['v']!r}")
        length = data["key_length"]
        if isinstance(length, bool) or not isinstance(length, int):
            raise EnvelopeError("key_length must be an integer")
        raw: dict[str, bytes] = {}
        for name in ("ephemeral", "wrapped", "tag"):
            value = data[name]
            if not isinstance(value, str) or len(value) % 2 or not _HEX_RE.fullmatch(value):
                raise EnvelopeError(f"{name} must be hex")
            raw[name] = bytes.fromhex(value)
        label = data["label"]
        if not isinstance(label, str):
            raise EnvelopeError("label must be a string")
        return cls(label, raw["ephemeral"], raw["wrapped"], raw["tag"], length)


def wrap_for_token(
    key: bytes,
    recipient: ec.EllipticCurvePublicKey | bytes,
    label: str,
    *,
    ephemeral_key: ec.EllipticCurvePrivateKey | None = None,
) -> Envelope:
    """The envelope carrying ``key`` to the token whose receive key is ``recipient``.

    ``ephemeral_key`` is for test vectors only: a reused ephemeral key reuses the KEK.
    """
    if not isinstance(key, bytes) or len(key) not in KEY_LENGTHS:
        raise EnvelopeError("the key must be 16, 24 or 32 bytes")
    q = point_bytes(recipient)
    e = ephemeral_key or ec.generate_private_key(ec.SECP256R1())
    big_e = point_bytes(e.public_key())
    z = e.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), q))
    kek = _ecb(z, kek_input(big_e, q, label))
    wrapped = _ecb(kek, key + bytes(-len(key) % 16), decrypt=True)
    tag = _cmac(key, kc_message(big_e, q, label, wrapped))
    return Envelope(label, big_e, wrapped, tag, len(key))


def receive_in_software(private_key: ec.EllipticCurvePrivateKey, envelope: Envelope) -> bytes:
    """The receiving side in software (the reference the token's derivation is tested against)."""
    q = point_bytes(private_key.public_key())
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), envelope.ephemeral)
    except ValueError:
        raise EnvelopeError("the ephemeral point is not on P-256") from None
    z = private_key.exchange(ec.ECDH(), peer)
    kek = _ecb(z, kek_input(envelope.ephemeral, q, envelope.label))
    key = _ecb(kek, envelope.wrapped)[: envelope.key_length]
    expected = _cmac(key, kc_message(envelope.ephemeral, q, envelope.label, envelope.wrapped))
    if not hmac.compare_digest(expected, envelope.tag):
        raise EnvelopeError("key confirmation failed: the envelope was altered or is not for this device")
    return key
