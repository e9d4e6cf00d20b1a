"""Confidential key loading with a one-shot package (ECC push model), both sides.

A provider builds, on its own side, a package that carries a new SCP03 key set (ENC, MAC, DEK) for
its Security Domain on ONE secure element.  The package travels opaquely (through Tessera, a TSM's
SCP03 session, INSTALL [for personalization] and STORE DATA to the ISD); the card checks it and
installs the keys; its receipt is a MAC only the provider can check.  The normative description,
every byte and a worked example, is ``docs/key-loading-package.md``; this module is its reference.

Built from GlobalPlatform conventions (GPC Amendment F v1.4 "SCP11" §3.1, §7.6; GPC Amendment A's
Controlling Authority model; GP Card Spec v2.3.1 for tags and key check values):

- ECKA on P-256 (BSI TR-03111): ``Z = ECDH(eSK.OCE, PK.CASD)``, the x-coordinate, 32 bytes.  The
  card's private key never leaves the card: the card side passes an ``ecdh`` callable.
- X9.63 KDF with SHA-256 (Amd F §3.1.2), ``SharedInfo`` binding format version, key type and
  length, SE identifier, SD AID, KVN and counter (:func:`shared_info`); KeyData split as in Amd F
  Table 7-16: bytes ``1..L`` receipt key, ``L+1..2L`` key-encryption key (L = key length).
- The key set ``ENC || MAC || DEK`` encrypted with AES key wrap (RFC 3394 / NIST SP 800-38F KW):
  built for key transport, deterministic (no IV to manage) and authenticated by its own integrity
  check, so a wrong agreement or a flipped bit fails before any key is used.
- ECDSA P-256 / SHA-256 signature by the provider's OCE key over everything before it, encoded as
  plain ``r || s`` (TR-03111 §5.2.1), 64 bytes; deterministic (RFC 6979), so packages reproduce.
- Receipt = AES-CMAC (16 bytes) with the receipt key over SE id, SD AID, KVN, counter and the KCVs
  (Amd F Table 7-17 does the same for SCP11's receipt).

Errors: every malformation and every refusal is a :class:`KeyLoadError` with a stable ``code``;
:data:`STATUS_WORDS` maps each card-side code to the status word the card answers.  Messages never
contain key material.

Which piece of state the provider keeps to check the receipt later: the **expected receipt**
(:attr:`BuiltPackage.expected_receipt`), 16 bytes, not the ephemeral private key nor the receipt
key.  It is not key material (it lets whoever holds it claim exactly one success, nothing more),
so it may sit in the provider's job records; :func:`verify_receipt` compares in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gp import gpcert, tlv
from gp.errors import GPError, ParseError, UsageError
from gp.scp03 import kcv

__all__ = [
    "AGREEMENT_FAILED",
    "BAD_CHAIN",
    "BAD_SIGNATURE",
    "BuiltPackage",
    "FORMAT_VERSION",
    "KCV_MISMATCH",
    "KeyLoadError",
    "KeyLoadPackage",
    "MALFORMED",
    "OpenedPackage",
    "RECEIPT_MISMATCH",
    "REPLAYED",
    "STATUS_WORDS",
    "UNSUPPORTED_VERSION",
    "UNWRAP_FAILED",
    "WRONG_SD",
    "WRONG_SE",
    "build_package",
    "build_package_with_receipt",
    "derive_keys",
    "ecdh_with",
    "encode_receipt_response",
    "open_package",
    "parse_package",
    "parse_receipt_response",
    "receipt_input",
    "receipt_for",
    "shared_info",
    "signature_input",
    "verify_receipt",
]

FORMAT_VERSION = 0x01

# Tags (docs/key-loading-package.md §3).  GP meanings reused where GP has one.
TAG_PACKAGE = 0xBF74  # the package template (Tessera-assigned; KVN 74 is the CASD's in GP)
TAG_VERSION = 0x80
TAG_SE_ID = 0x5F20  # subject identifier, as in the CASD's GP certificate (Amd F §6.1)
TAG_SD_AID = 0x4F  # AID (GPCS Table 11-36)
TAG_COUNTER = 0x91
TAG_KEY_SET = 0xB9  # key set template
TAG_KVN = 0x83  # key version number (GPCS §11.11.4 DGI 00B9 uses 83 too)
TAG_KEY_TYPE = 0x80
TAG_KEY_LENGTH = 0x81
TAG_KCVS = 0x84  # key check values (DGI 00B9 uses 84 too)
TAG_EPHEMERAL_KEY = 0x5F49  # ePK.OCE.ECKA (Amd F Table 7-15)
TAG_WRAPPED_KEYS = 0x85  # cryptogram (ISO/IEC 7816-4 Table 32)
TAG_CERTIFICATES = 0xBF21  # certificate chain, leaf last (Amd F §7.2 certificate store)
TAG_SIGNATURE = 0x5F37  # signature (as in GP certificates)
TAG_RECEIPT = 0x86  # receipt (Amd F Table 7-18)

KEY_TYPE_AES = 0x88  # GPCS Table 11-16
KEY_LENGTHS = (16, 24, 32)
KCV_LENGTH = 3
RECEIPT_LENGTH = 16
SIGNATURE_LENGTH = 64
POINT_LENGTH = 65
COUNTER_LENGTH = 8
MAX_COUNTER = (1 << 64) - 1
SE_ID_MAX = 64
SD_AID_MIN, SD_AID_MAX = 5, 16
MAX_CERTIFICATES = 4
MAX_CERTIFICATE_LENGTH = 2048
MAX_PACKAGE_LENGTH = 12288

# Error codes: stable, part of the format's contract.
MALFORMED = "malformed"
UNSUPPORTED_VERSION = "unsupported_version"
WRONG_SE = "wrong_se"
WRONG_SD = "wrong_sd"
BAD_CHAIN = "bad_chain"
BAD_SIGNATURE = "bad_signature"
REPLAYED = "replayed"
AGREEMENT_FAILED = "agreement_failed"
UNWRAP_FAILED = "unwrap_failed"
KCV_MISMATCH = "kcv_mismatch"
RECEIPT_MISMATCH = "receipt_mismatch"  # off-card only: the provider's check of the receipt

# The status word the card answers for each refusal (ISO/IEC 7816-4 §5.6, GPCS Table 11-10).
STATUS_WORDS: dict[str, int] = {
    MALFORMED: 0x6A80,  # incorrect values in the command data
    UNSUPPORTED_VERSION: 0x6A80,
    WRONG_SE: 0x6A80,  # the package names another card: its data is wrong for this one
    WRONG_SD: 0x6A80,
    AGREEMENT_FAILED: 0x6A80,  # the ephemeral key is not a usable P-256 point
    BAD_CHAIN: 0x6982,  # security status not satisfied: the signer is not certified by the CA
    BAD_SIGNATURE: 0x6982,
    REPLAYED: 0x6985,  # conditions of use not satisfied: counter not above the last one
    UNWRAP_FAILED: 0x6988,  # incorrect secured data objects: integrity of the cryptogram
    KCV_MISMATCH: 0x6988,
}

VerifyChain = Callable[[Sequence[bytes], ec.EllipticCurvePublicKey], Any]
Ecdh = Callable[[ec.EllipticCurvePublicKey], bytes]


class KeyLoadError(GPError):
    """A package is malformed or refused, or a receipt does not match.

    ``code`` is one of the module's error-code constants; ``sw`` the status word a card answers for
    it (``None`` for off-card-only codes).  Messages name the problem, never key material.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def sw(self) -> int | None:
        return STATUS_WORDS.get(self.code)


# --- the package ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyLoadPackage:
    """A parsed package: every field, checked for form only (nothing is verified yet)."""

    version: int
    se_id: bytes
    sd_aid: bytes
    counter: int
    kvn: int
    key_length: int
    kcvs: tuple[bytes, bytes, bytes]
    ephemeral_public_key: ec.EllipticCurvePublicKey = field(repr=False, compare=False)
    ephemeral_point: bytes = field(repr=False)
    wrapped_keys: bytes = field(repr=False)
    certificates: tuple[bytes, ...] = field(repr=False)
    signature: bytes = field(repr=False)
    raw: bytes = field(repr=False)

    @property
    def signed_data(self) -> bytes:
        """The bytes the signature covers (:func:`signature_input`)."""
        return signature_input(self.raw)


@dataclass(frozen=True, slots=True)
class OpenedPackage:
    """What the card obtains from a verified package.  Keys never appear in ``repr``."""

    enc: bytes = field(repr=False)
    mac: bytes = field(repr=False)
    dek: bytes = field(repr=False)
    kvn: int
    counter: int
    kcvs: tuple[bytes, bytes, bytes]
    receipt: bytes

    @property
    def key_length(self) -> int:
        return len(self.enc)

    @property
    def keys(self) -> tuple[bytes, bytes, bytes]:
        return (self.enc, self.mac, self.dek)


@dataclass(frozen=True, slots=True)
class BuiltPackage:
    """The provider's result: the package to send and what to keep to check the receipt later."""

    package: bytes
    expected_receipt: bytes
    kvn: int
    counter: int
    kcvs: tuple[bytes, bytes, bytes]


# --- shared pieces ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Object:
    """One data object read without looking inside its value (see :func:`_flat`)."""

    tag: int
    value: bytes
    raw: bytes


def _flat(data: bytes, what: str) -> list[_Object]:
    """The top-level data objects of ``data``, values left unparsed.

    Never a recursive BER parse: GP certificates carry context tags (``B0``, ``F0``) whose
    "constructed" bit is set although their values are primitive.
    """
    out: list[_Object] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            start = pos
            if data[pos] in (0x00, 0xFF):
                raise ParseError(f"byte {data[pos]:02X} cannot start a tag", offset=pos)
            tag, pos = tlv._read_tag(data, pos, end)
            length, pos = tlv._read_length(data, pos, end)
            if length > end - pos:
                raise ParseError(f"value of {length} bytes overruns the {end - pos} available", offset=pos)
            out.append(_Object(tag, data[pos : pos + length], data[start : pos + length]))
            pos += length
    except ParseError as e:
        raise KeyLoadError(MALFORMED, f"{what}: {e}") from None
    return out


def _lv(value: bytes) -> bytes:
    return bytes([len(value)]) + value


def shared_info(*, se_id: bytes, sd_aid: bytes, kvn: int, counter: int, key_length: int) -> bytes:
    """X9.63 SharedInfo: ``version || '88' || L || LV(SE id) || LV(SD AID) || KVN || counter(8)``."""
    return (
        bytes([FORMAT_VERSION, KEY_TYPE_AES, key_length])
        + _lv(se_id)
        + _lv(sd_aid)
        + bytes([kvn])
        + counter.to_bytes(COUNTER_LENGTH, "big")
    )


def derive_keys(shared_secret: bytes, info: bytes, key_length: int) -> tuple[bytes, bytes]:
    """X9.63 KDF / SHA-256 over ``shared_secret`` → ``(receipt key, key-encryption key)``."""
    data = X963KDF(algorithm=hashes.SHA256(), length=2 * key_length, sharedinfo=info).derive(shared_secret)
    return data[:key_length], data[key_length:]


def receipt_input(*, se_id: bytes, sd_aid: bytes, kvn: int, counter: int, kcvs: Sequence[bytes]) -> bytes:
    """``version || LV(SE id) || LV(SD AID) || KVN || counter(8) || KCV(ENC) KCV(MAC) KCV(DEK)``."""
    return (
        bytes([FORMAT_VERSION])
        + _lv(se_id)
        + _lv(sd_aid)
        + bytes([kvn])
        + counter.to_bytes(COUNTER_LENGTH, "big")
        + b"".join(kcvs)
    )


def receipt_for(
    receipt_key: bytes, *, se_id: bytes, sd_aid: bytes, kvn: int, counter: int, kcvs: Sequence[bytes]
) -> bytes:
    """AES-CMAC (16 bytes) with ``receipt_key`` over :func:`receipt_input`."""
    c = cmac.CMAC(algorithms.AES(receipt_key))
    c.update(receipt_input(se_id=se_id, sd_aid=sd_aid, kvn=kvn, counter=counter, kcvs=kcvs))
    return c.finalize()


def verify_receipt(receipt: bytes, *, expected_receipt: bytes) -> None:
    """Raise :class:`KeyLoadError` (``receipt_mismatch``) unless ``receipt`` is the expected one."""
    if len(expected_receipt) != RECEIPT_LENGTH:
        raise UsageError(f"an expected receipt is {RECEIPT_LENGTH} bytes, got {len(expected_receipt)}")
    if not hmac.compare_digest(bytes(receipt), bytes(expected_receipt)):
        raise KeyLoadError(RECEIPT_MISMATCH, "the card's receipt does not match the package")


def encode_receipt_response(receipt: bytes) -> bytes:
    """The card's response data to the last STORE DATA: ``86 10 <receipt>``."""
    return tlv.encode(TAG_RECEIPT, receipt)


def parse_receipt_response(data: bytes) -> bytes:
    """The receipt from ``86 10 <receipt>``; anything else raises ``malformed``."""
    objects = _flat(bytes(data), "receipt response")
    t = objects[0] if len(objects) == 1 else None
    if t is None or t.tag != TAG_RECEIPT or len(t.value) != RECEIPT_LENGTH:
        raise KeyLoadError(MALFORMED, f"receipt response must be tag 86 with {RECEIPT_LENGTH} bytes")
    return t.value


def signature_input(raw: bytes) -> bytes:
    """``'BF74' || every data object of the template before '5F37'``, as encoded in ``raw``.

    ``raw`` is a canonical package (signed or not yet: the signature object, last, is dropped).
    """
    (outer,) = _flat(raw, "package")
    kids = _flat(outer.value, "package template")
    if kids and kids[-1].tag == TAG_SIGNATURE:
        kids = kids[:-1]
    return tlv.encode_tag(TAG_PACKAGE) + b"".join(k.raw for k in kids)


def ecdh_with(private_key: ec.EllipticCurvePrivateKey) -> Ecdh:
    """An ``ecdh`` callable for :func:`open_package` from a private key held in this process
    (the software SE's CASD; a real card does the agreement inside)."""

    def agree(public_key: ec.EllipticCurvePublicKey) -> bytes:
        return private_key.exchange(ec.ECDH(), public_key)

    return agree


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _is_p256(key: object) -> bool:
    return isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        key.curve, ec.SECP256R1
    )


# --- provider side ----------------------------------------------------------------------------


def _check_build_args(
    casd_public_key: Any,
    se_id: bytes,
    sd_aid: bytes,
    kvn: int,
    keys: Sequence[bytes],
    counter: int,
    oce_private_key: Any,
    oce_certificates: Sequence[bytes],
    ephemeral_private_key: Any,
) -> None:
    if not _is_p256(casd_public_key) or not isinstance(casd_public_key, ec.EllipticCurvePublicKey):
        raise UsageError("casd_public_key must be a P-256 public key")
    if not _is_p256(oce_private_key) or not isinstance(oce_private_key, ec.EllipticCurvePrivateKey):
        raise UsageError("oce_private_key must be a P-256 private key")
    if ephemeral_private_key is not None and not (
        _is_p256(ephemeral_private_key) and isinstance(ephemeral_private_key, ec.EllipticCurvePrivateKey)
    ):
        raise UsageError("ephemeral_private_key must be a P-256 private key")
    if not 1 <= len(se_id) <= SE_ID_MAX:
        raise UsageError(f"se_id must be 1 to {SE_ID_MAX} bytes, got {len(se_id)}")
    if not SD_AID_MIN <= len(sd_aid) <= SD_AID_MAX:
        raise UsageError(f"sd_aid must be {SD_AID_MIN} to {SD_AID_MAX} bytes, got {len(sd_aid)}")
    if not 0x01 <= kvn <= 0x7F:
        raise UsageError(f"kvn must be 01 to 7F, got {kvn:#04x}")
    if not 1 <= counter <= MAX_COUNTER:
        raise UsageError("counter must be 1 to 2**64 - 1")
    if len(keys) != 3:
        raise UsageError("keys must be (enc, mac, dek)")
    lengths = {len(k) for k in keys}
    if len(lengths) != 1 or lengths.pop() not in KEY_LENGTHS:
        raise UsageError("keys must be three AES keys of one length: 16, 24 or 32 bytes")
    if not 1 <= len(oce_certificates) <= MAX_CERTIFICATES:
        raise UsageError(f"oce_certificates must hold 1 to {MAX_CERTIFICATES} certificates, leaf last")
    for cert in oce_certificates:
        if not 1 <= len(cert) <= MAX_CERTIFICATE_LENGTH:
            raise UsageError(f"a certificate must be 1 to {MAX_CERTIFICATE_LENGTH} bytes")
        try:
            objects = _flat(bytes(cert), "certificate")
        except KeyLoadError as e:
            raise UsageError(f"a certificate is not one DER/BER object: {e.message}") from None
        if len(objects) != 1 or objects[0].tag not in (0x30, 0x7F21):
            raise UsageError("a certificate is one X.509 DER ('30') or GP ('7F21') object")
    try:
        leaf = gpcert.parse_certificate(bytes(oce_certificates[-1]))
    except GPError as e:
        raise UsageError(f"the leaf OCE certificate does not decode: {e}") from None
    if _point(leaf.public_key) != _point(oce_private_key.public_key()):
        raise UsageError("the leaf OCE certificate does not certify oce_private_key")


def _encode(
    *,
    se_id: bytes,
    sd_aid: bytes,
    counter: int,
    kvn: int,
    key_length: int,
    kcvs: Sequence[bytes],
    point: bytes,
    wrapped: bytes,
    certificates: Sequence[bytes],
    signature: bytes | None,
    version: int = FORMAT_VERSION,
) -> bytes:
    key_set = (
        tlv.encode(TAG_KVN, bytes([kvn]))
        + tlv.encode(TAG_KEY_TYPE, bytes([KEY_TYPE_AES]))
        + tlv.encode(TAG_KEY_LENGTH, bytes([key_length]))
        + tlv.encode(TAG_KCVS, b"".join(kcvs))
    )
    body = (
        tlv.encode(TAG_VERSION, bytes([version]))
        + tlv.encode(TAG_SE_ID, se_id)
        + tlv.encode(TAG_SD_AID, sd_aid)
        + tlv.encode(TAG_COUNTER, counter.to_bytes(COUNTER_LENGTH, "big"))
        + tlv.encode(TAG_KEY_SET, key_set)
        + tlv.encode(TAG_EPHEMERAL_KEY, point)
        + tlv.encode(TAG_WRAPPED_KEYS, wrapped)
        + tlv.encode(TAG_CERTIFICATES, b"".join(certificates))
    )
    if signature is not None:
        body += tlv.encode(TAG_SIGNATURE, signature)
    return tlv.encode_tag(TAG_PACKAGE) + tlv.encode_length(len(body)) + body


def build_package_with_receipt(
    *,
    casd_public_key: ec.EllipticCurvePublicKey,
    se_id: bytes,
    sd_aid: bytes,
    kvn: int,
    keys: Sequence[bytes],
    counter: int,
    oce_private_key: ec.EllipticCurvePrivateKey,
    oce_certificates: Sequence[bytes],
    ephemeral_private_key: ec.EllipticCurvePrivateKey | None = None,
) -> BuiltPackage:
    """Build the package for one SE and SD, and the receipt the card will answer if it installs it.

    Preconditions: ``casd_public_key`` was taken from a CASD certificate the caller verified to the
    CA root it pins; ``counter`` is above every counter used before for (SE, SD);
    ``oce_certificates`` is the provider's chain, first signed by the CA-KLOC key the card holds,
    leaf (certifying ``oce_private_key``) last.

    Steps: 1. fresh ephemeral key pair (unless injected, for reproducible examples); 2. ``Z`` =
    ECDH(eSK, PK.CASD); 3. receipt key and KEK from the X9.63 KDF over ``Z`` and
    :func:`shared_info`; 4. AES-KW(KEK, ENC||MAC||DEK); 5. encode every field; 6. ECDSA over
    :func:`signature_input`; 7. expected receipt = CMAC(receipt key, :func:`receipt_input`).
    The ephemeral private key, ``Z``, the KEK and the receipt key are dropped on return.
    """
    _check_build_args(
        casd_public_key,
        se_id,
        sd_aid,
        kvn,
        keys,
        counter,
        oce_private_key,
        oce_certificates,
        ephemeral_private_key,
    )
    se_id, sd_aid = bytes(se_id), bytes(sd_aid)
    enc, mac, dek = (bytes(k) for k in keys)
    key_length = len(enc)
    eph = ephemeral_private_key or ec.generate_private_key(ec.SECP256R1())
    z = eph.exchange(ec.ECDH(), casd_public_key)
    info = shared_info(se_id=se_id, sd_aid=sd_aid, kvn=kvn, counter=counter, key_length=key_length)
    receipt_key, kek = derive_keys(z, info, key_length)
    kcvs = (kcv(enc), kcv(mac), kcv(dek))
    fields: dict[str, Any] = {
        "se_id": se_id,
        "sd_aid": sd_aid,
        "counter": counter,
        "kvn": kvn,
        "key_length": key_length,
        "kcvs": kcvs,
        "point": _point(eph.public_key()),
        "wrapped": aes_key_wrap(kek, enc + mac + dek),
        "certificates": [bytes(c) for c in oce_certificates],
    }
    unsigned = _encode(**fields, signature=None)
    der = oce_private_key.sign(
        signature_input(unsigned), ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    )
    r, s = decode_dss_signature(der)
    package = _encode(**fields, signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    if len(package) > MAX_PACKAGE_LENGTH:
        raise UsageError(f"the package would be {len(package)} bytes, over {MAX_PACKAGE_LENGTH}")
    expected = receipt_for(receipt_key, se_id=se_id, sd_aid=sd_aid, kvn=kvn, counter=counter, kcvs=kcvs)
    return BuiltPackage(package, expected, kvn, counter, kcvs)


def build_package(
    *,
    casd_public_key: ec.EllipticCurvePublicKey,
    se_id: bytes,
    sd_aid: bytes,
    kvn: int,
    keys: Sequence[bytes],
    counter: int,
    oce_private_key: ec.EllipticCurvePrivateKey,
    oce_certificates: Sequence[bytes],
    ephemeral_private_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """The package bytes only (see :func:`build_package_with_receipt` to keep the expected receipt)."""
    return build_package_with_receipt(
        casd_public_key=casd_public_key,
        se_id=se_id,
        sd_aid=sd_aid,
        kvn=kvn,
        keys=keys,
        counter=counter,
        oce_private_key=oce_private_key,
        oce_certificates=oce_certificates,
        ephemeral_private_key=ephemeral_private_key,
    ).package


# --- parsing ----------------------------------------------------------------------------------


def _malformed(message: str) -> KeyLoadError:
    return KeyLoadError(MALFORMED, message)


def _take(children: Sequence[_Object], index: int, tag: int, what: str) -> _Object:
    if index >= len(children):
        raise _malformed(f"{what} (tag {tag:X}) missing")
    t = children[index]
    if t.tag != tag:
        raise _malformed(f"expected {what} (tag {tag:X}) as data object {index + 1}, found tag {t.tag:X}")
    return t


def parse_package(data: bytes) -> KeyLoadPackage:
    """Parse a package strictly: one canonical ``BF74`` template, every data object present once,
    in order, with its exact length.  Any deviation raises :class:`KeyLoadError` (``malformed`` or
    ``unsupported_version``).  Nothing is verified cryptographically here (see :func:`open_package`).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _malformed("a package is bytes")
    raw = bytes(data)
    if len(raw) > MAX_PACKAGE_LENGTH:
        raise _malformed(f"package of {len(raw)} bytes is over {MAX_PACKAGE_LENGTH}")
    top = _flat(raw, "package")
    if len(top) != 1:
        raise _malformed("a package is exactly one data object")
    outer = top[0]
    if outer.tag != TAG_PACKAGE:
        raise _malformed(f"package template must be tag BF74, found {outer.tag:X}")
    kids = _flat(outer.value, "package template")
    version_tlv = _take(kids, 0, TAG_VERSION, "format version")
    if len(version_tlv.value) != 1:
        raise _malformed("format version is one byte")
    if version_tlv.value[0] != FORMAT_VERSION:
        raise KeyLoadError(
            UNSUPPORTED_VERSION, f"format version {version_tlv.value[0]:02X} (this card reads 01)"
        )
    se_id = _take(kids, 1, TAG_SE_ID, "SE identifier").value
    if not 1 <= len(se_id) <= SE_ID_MAX:
        raise _malformed(f"SE identifier must be 1 to {SE_ID_MAX} bytes")
    sd_aid = _take(kids, 2, TAG_SD_AID, "SD AID").value
    if not SD_AID_MIN <= len(sd_aid) <= SD_AID_MAX:
        raise _malformed(f"SD AID must be {SD_AID_MIN} to {SD_AID_MAX} bytes")
    counter_raw = _take(kids, 3, TAG_COUNTER, "counter").value
    if len(counter_raw) != COUNTER_LENGTH:
        raise _malformed(f"counter is {COUNTER_LENGTH} bytes")
    counter = int.from_bytes(counter_raw, "big")
    if counter == 0:
        raise _malformed("counter 0 is not allowed (counters start at 1)")
    key_set = _take(kids, 4, TAG_KEY_SET, "key set template")
    ks = _flat(key_set.value, "key set template")
    kvn_raw = _take(ks, 0, TAG_KVN, "KVN").value
    if len(kvn_raw) != 1 or not 0x01 <= kvn_raw[0] <= 0x7F:
        raise _malformed("KVN is one byte, 01 to 7F")
    key_type = _take(ks, 1, TAG_KEY_TYPE, "key type").value
    if key_type != bytes([KEY_TYPE_AES]):
        raise _malformed("key type must be 88 (AES)")
    length_raw = _take(ks, 2, TAG_KEY_LENGTH, "key length").value
    if len(length_raw) != 1 or length_raw[0] not in KEY_LENGTHS:
        raise _malformed("key length must be 10, 18 or 20 (16, 24 or 32 bytes)")
    key_length = length_raw[0]
    kcv_raw = _take(ks, 3, TAG_KCVS, "key check values").value
    if len(kcv_raw) != 3 * KCV_LENGTH:
        raise _malformed("key check values are 3 x 3 bytes")
    if len(ks) != 4:
        raise _malformed("key set template holds exactly 83, 80, 81, 84")
    point = _take(kids, 5, TAG_EPHEMERAL_KEY, "ephemeral public key").value
    if len(point) != POINT_LENGTH or point[0] != 0x04:
        raise _malformed("ephemeral public key must be an uncompressed P-256 point (65 bytes, 04 ...)")
    try:
        epk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise _malformed("ephemeral public key is not a point on P-256") from None
    wrapped = _take(kids, 6, TAG_WRAPPED_KEYS, "encrypted key set").value
    if len(wrapped) != 3 * key_length + 8:
        raise _malformed(f"encrypted key set must be {3 * key_length + 8} bytes for {key_length}-byte keys")
    chain = _take(kids, 7, TAG_CERTIFICATES, "certificate chain")
    certs = tuple(c.raw for c in _flat(chain.value, "certificate chain"))
    if any(c[:1] != b"\x30" and c[:2] != b"\x7f\x21" for c in certs):
        raise _malformed("a certificate is X.509 DER ('30') or GP ('7F21')")
    if not 1 <= len(certs) <= MAX_CERTIFICATES:
        raise _malformed(f"certificate chain holds 1 to {MAX_CERTIFICATES} certificates")
    if any(len(c) > MAX_CERTIFICATE_LENGTH for c in certs):
        raise _malformed(f"a certificate is over {MAX_CERTIFICATE_LENGTH} bytes")
    signature = _take(kids, 8, TAG_SIGNATURE, "signature").value
    if len(signature) != SIGNATURE_LENGTH:
        raise _malformed(f"signature is r || s, {SIGNATURE_LENGTH} bytes")
    if len(kids) != 9:
        raise _malformed(f"{len(kids) - 9} data objects follow the signature")
    kcvs = (kcv_raw[0:3], kcv_raw[3:6], kcv_raw[6:9])
    canonical = _encode(
        se_id=se_id,
        sd_aid=sd_aid,
        counter=counter,
        kvn=kvn_raw[0],
        key_length=key_length,
        kcvs=kcvs,
        point=point,
        wrapped=wrapped,
        certificates=certs,
        signature=signature,
    )
    if canonical != raw:
        raise _malformed("package is not in canonical (minimal-length) encoding")
    return KeyLoadPackage(
        version=FORMAT_VERSION,
        se_id=se_id,
        sd_aid=sd_aid,
        counter=counter,
        kvn=kvn_raw[0],
        key_length=key_length,
        kcvs=kcvs,
        ephemeral_public_key=epk,
        ephemeral_point=point,
        wrapped_keys=wrapped,
        certificates=certs,
        signature=signature,
        raw=raw,
    )


# --- card side --------------------------------------------------------------------------------


def _leaf_key(result: Any) -> Any:
    """The leaf public key from a chain verifier's answer (a key, or an object carrying one)."""
    if isinstance(result, ec.EllipticCurvePublicKey):
        return result
    for attribute in ("public_key", "leaf_public_key"):
        value = getattr(result, attribute, None)
        if callable(value):
            value = value()
        if isinstance(value, ec.EllipticCurvePublicKey):
            return value
    return None


def open_package(
    package: KeyLoadPackage,
    *,
    ecdh: Ecdh,
    se_id: bytes,
    sd_aid: bytes,
    last_counter: int,
    ca_public_key: ec.EllipticCurvePublicKey,
    verify_chain: VerifyChain | None = None,
) -> OpenedPackage:
    """The card's side: verify ``package`` for this SE and SD and recover the key set.

    ``ecdh`` does the agreement with the CASD private key inside the card and returns ``Z``;
    ``last_counter`` is the highest counter accepted before for (SE, SD) (0 if none);
    ``verify_chain(certificates, ca_public_key)`` returns the leaf (OCE) public key, or an object
    with a ``public_key`` (as :func:`gp.gpcert.verify_chain` does, the default), or raises.

    Checks, in this order (the first failure decides the code; nothing is returned on failure, and
    the caller changes no state): 1. target SE, 2. target SD (``wrong_se`` / ``wrong_sd``);
    3. OCE chain to the CA key (``bad_chain``); 4. signature (``bad_signature``); 5. counter above
    ``last_counter`` (``replayed``); 6. agreement (``agreement_failed``); 7. key unwrap
    (``unwrap_failed``); 8. KCVs (``kcv_mismatch``).  Then the receipt is computed.
    Effects for the caller on success: install the key set under ``kvn`` and store ``counter`` as
    the new last counter for (SE, SD), atomically.
    """
    if not hmac.compare_digest(package.se_id, bytes(se_id)):
        raise KeyLoadError(WRONG_SE, "the package is for another secure element")
    if not hmac.compare_digest(package.sd_aid, bytes(sd_aid)):
        raise KeyLoadError(WRONG_SD, "the package is for another security domain")
    verifier = verify_chain or gpcert.verify_chain
    try:
        leaf = _leaf_key(verifier(list(package.certificates), ca_public_key))
    except (KeyLoadError, gpcert.CertificateError) as e:
        raise KeyLoadError(BAD_CHAIN, f"OCE certificate chain refused: {e.message}") from None
    except Exception as e:  # noqa: BLE001 - fail closed: any verifier failure refuses the chain
        raise KeyLoadError(BAD_CHAIN, f"OCE certificate chain refused ({type(e).__name__})") from None
    if leaf is None or not _is_p256(leaf):
        raise KeyLoadError(BAD_CHAIN, "the OCE certificate does not carry a P-256 key")
    r = int.from_bytes(package.signature[:32], "big")
    s = int.from_bytes(package.signature[32:], "big")
    try:
        leaf.verify(encode_dss_signature(r, s), package.signed_data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise KeyLoadError(BAD_SIGNATURE, "the package signature does not verify") from None
    if package.counter <= last_counter:
        raise KeyLoadError(REPLAYED, "the counter is not above the last one accepted for this SD")
    try:
        z = ecdh(package.ephemeral_public_key)
    except Exception:  # noqa: BLE001 - the card's agreement refused the point
        raise KeyLoadError(AGREEMENT_FAILED, "key agreement with the ephemeral key failed") from None
    if not isinstance(z, bytes) or len(z) != 32:
        raise KeyLoadError(AGREEMENT_FAILED, "key agreement did not give a 32-byte secret")
    info = shared_info(
        se_id=package.se_id,
        sd_aid=package.sd_aid,
        kvn=package.kvn,
        counter=package.counter,
        key_length=package.key_length,
    )
    receipt_key, kek = derive_keys(z, info, package.key_length)
    try:
        clear = aes_key_unwrap(kek, package.wrapped_keys)
    except InvalidUnwrap:
        raise KeyLoadError(UNWRAP_FAILED, "the encrypted key set fails its integrity check") from None
    n = package.key_length
    enc, mac, dek = clear[:n], clear[n : 2 * n], clear[2 * n :]
    if any(
        not hmac.compare_digest(kcv(key), check)
        for key, check in zip((enc, mac, dek), package.kcvs, strict=True)
    ):
        raise KeyLoadError(KCV_MISMATCH, "a key does not match its key check value")
    receipt = receipt_for(
        receipt_key,
        se_id=package.se_id,
        sd_aid=package.sd_aid,
        kvn=package.kvn,
        counter=package.counter,
        kcvs=package.kcvs,
    )
    return OpenedPackage(enc, mac, dek, package.kvn, package.counter, package.kcvs, receipt)
