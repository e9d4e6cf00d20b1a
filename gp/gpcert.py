"""GlobalPlatform ``7F21`` certificates and SCP11 certificate chains (X.509 or GP format).

Format (GP Card Spec v2.3 Amendment F v1.4 "Amd F" §6.1, Tables 6-1 .. 6-3; the same format as
CERT.CASD.ECKA in Amendment A)::

    7F21 {
      93    serial number (1-16)             42   CA identifier (CA-KLOC / KA-KLOC, 1-16)
      5F20  subject identifier              95   key usage: '82' signature verification,
                                                        '00 80' key agreement
      5F25  effective date (optional)       5F24 expiration date
      53|73 discretionary data (optional)   BF20 SCP11a/c authorisations (optional, kept opaque)
      7F49 { B0 public point Q, F0 key parameter reference }
      5F37  signature
    }

Choices where published implementations differ (checked against Samsung OpenSCP-Java
``GlobalPlatformScpCertificate.java`` and its test data @6696c018, Yubico yubikit's SCP11 code,
and the Amd F v1.4 text in ``martinpaljak/GlobalPlatformPro`` ``docs/pdfs/``):

- **Signature input** — Amd F Table 6-2: the TLVs of the certificate, in order, except ``5F37``
  (the ``7F21`` tag and length are not signed).  Verification signs over the bytes as received,
  so a certificate whose optional fields come in another order still verifies.
- **Signature encoding** — ``5F37`` holds the DER ``ECDSA-Sig-Value`` (SEQUENCE of r, s), as in
  Samsung's test certificates; on verification a raw ``r || s`` of twice the field size is
  accepted too.  Hash: SHA-256 / SHA-384 / SHA-512 by the signer's curve size (GPCS B.4.3).
- **Dates** — Amd F says BCD ``YYYYMMDD``; we encode BCD.  Samsung's test certificates carry
  ``141C0C1F`` (each of 20, 28, 12, 31 as a binary byte); the decoder reads BCD and falls back to
  that form only when the bytes are not valid BCD, so both decode to 2028-12-31.  The expiration
  date is inclusive (valid through that day, UTC).
- **Field sizes** — Amd F allows 1-16 bytes for the serial number and CA identifier; Samsung's
  test certificates carry 20-byte ones (an X.509 serial and a subject key identifier), so up to
  20 bytes are accepted.
- **Key parameter references** (GPCS Table B-2): 00 P-256, 01 P-384, 02 P-521, 03 brainpoolP256r1,
  05 brainpoolP384r1, 07 brainpoolP512r1.

:func:`verify_chain` takes the chain as in ``BF21`` and PERFORM SECURITY OPERATION (first
certificate signed by the root, leaf LAST), each certificate as X.509 DER or ``7F21``, and checks
signatures up to the root public key, validity dates and key usage (intermediates: signature /
keyCertSign; leaf: key agreement).  Every failure raises :class:`CertificateError` with a stable
``code``; messages never contain key material.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gp import tlv
from gp.errors import GPError

__all__ = [
    "CURVES",
    "KEY_USAGE_AGREEMENT",
    "KEY_USAGE_SIGNATURE",
    "CertInfo",
    "CertificateError",
    "GPCertificate",
    "curve_reference",
    "decode_point",
    "check_certificate",
    "encode_point",
    "flat_tlvs",
    "parse_certificate",
    "split_certificates",
    "verify_chain",
]

TAG_CERTIFICATE = 0x7F21
TAG_SERIAL = 0x93
TAG_CA_ID = 0x42
TAG_SUBJECT_ID = 0x5F20
TAG_KEY_USAGE = 0x95
TAG_EFFECTIVE = 0x5F25
TAG_EXPIRY = 0x5F24
TAG_DISCRETIONARY = 0x53
TAG_DISCRETIONARY_CONSTRUCTED = 0x73
TAG_AUTHORIZATIONS = 0xBF20
TAG_PUBLIC_KEY = 0x7F49
TAG_POINT = 0xB0
TAG_KEY_PARAM = 0xF0
TAG_SIGNATURE = 0x5F37

KEY_USAGE_SIGNATURE = b"\x82"  # digital signature verification (KA-KLOC / CA certificates)
KEY_USAGE_AGREEMENT = b"\x00\x80"  # key agreement (CERT.OCE.ECKA, CERT.SD.ECKA)

# GPCS v2.3.1 Table B-2, key parameter reference -> curve.
CURVES: dict[int, ec.EllipticCurve] = {
    0x00: ec.SECP256R1(),
    0x01: ec.SECP384R1(),
    0x02: ec.SECP521R1(),
    0x03: ec.BrainpoolP256R1(),
    0x05: ec.BrainpoolP384R1(),
    0x07: ec.BrainpoolP512R1(),
}
_REFS = {type(c): ref for ref, c in CURVES.items()}


def flat_tlvs(data: bytes, what: str = "TLV data") -> list[tuple[int, bytes, bytes]]:
    """``(tag, value, encoding)`` of each top-level BER-TLV in ``data``, values left unparsed.

    GP uses context tags such as ``B0`` and ``F0`` whose "constructed" bit is set although their
    values are primitive, so a recursive BER parse cannot be used on certificate fields.
    """
    buf = bytes(data)
    out = []
    pos, end = 0, len(buf)
    try:
        while pos < end:
            start = pos
            if buf[pos] in (0x00, 0xFF):
                raise GPError(f"byte {buf[pos]:02X} at offset {pos} cannot start a tag")
            tag, pos = tlv._read_tag(buf, pos, end)
            length, pos = tlv._read_length(buf, pos, end)
            if length > end - pos:
                raise GPError(f"value of {length} bytes at offset {pos} overruns the data")
            out.append((tag, buf[pos : pos + length], buf[start : pos + length]))
            pos += length
    except GPError as e:
        raise CertificateError("malformed", f"{what}: {e}") from None
    return out


class CertificateError(GPError):
    """A certificate or chain is malformed or does not verify.

    ``code`` is stable: ``malformed``, ``unsupported_curve``, ``bad_signature``, ``expired``,
    ``not_yet_valid``, ``key_usage``, ``revoked``, ``empty_chain``, ``mixed_formats``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- keys ---------------------------------------------------------------------------------------


def curve_reference(curve: ec.EllipticCurve) -> int:
    """The GP key parameter reference of ``curve``; CertificateError for curves GP does not name."""
    ref = _REFS.get(type(curve))
    if ref is None:
        raise CertificateError("unsupported_curve", f"curve {curve.name} has no GP key parameter reference")
    return ref


def encode_point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed point ``04 || X || Y``."""
    return public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def decode_point(point: bytes, ref: int = 0x00) -> ec.EllipticCurvePublicKey:
    """A public key from an uncompressed point on the curve of key parameter reference ``ref``."""
    curve = CURVES.get(ref)
    if curve is None:
        raise CertificateError("unsupported_curve", f"key parameter reference {ref:02X} is not supported")
    size = (curve.key_size + 7) // 8
    if len(point) != 1 + 2 * size or point[0] != 0x04:
        raise CertificateError("malformed", f"public key is not an uncompressed {curve.name} point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, bytes(point))
    except ValueError:
        raise CertificateError("malformed", f"public key is not a point on {curve.name}") from None


def _hash_for(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> hashes.HashAlgorithm:
    bits = key.curve.key_size
    if bits <= 256:
        return hashes.SHA256()
    if bits <= 384:
        return hashes.SHA384()
    return hashes.SHA512()


def _verify_signature(issuer: Any, signature: bytes, data: bytes, what: str) -> None:
    if not isinstance(issuer, ec.EllipticCurvePublicKey):
        raise CertificateError("unsupported_curve", f"{what}: issuer key is not an EC public key")
    size = (issuer.curve.key_size + 7) // 8
    sig = bytes(signature)
    if len(sig) == 2 * size and sig[:1] != b"\x30":
        sig = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
    else:
        try:
            decode_dss_signature(sig)
        except ValueError:
            raise CertificateError("malformed", f"{what}: signature is neither DER nor r||s") from None
    try:
        issuer.verify(sig, data, ec.ECDSA(_hash_for(issuer)))
    except InvalidSignature:
        raise CertificateError(
            "bad_signature", f"{what}: signature does not verify with the issuer key"
        ) from None


# --- dates --------------------------------------------------------------------------------------


def _encode_date(d: _dt.date) -> bytes:
    digits = f"{d.year:04d}{d.month:02d}{d.day:02d}"
    return bytes.fromhex(digits)


def _decode_date(raw: bytes, what: str) -> _dt.date:
    if len(raw) != 4:
        raise CertificateError("malformed", f"{what} must be 4 bytes, got {len(raw)}")
    text = raw.hex()
    try:
        if text.isdigit():
            return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        # Samsung OpenSCP-Java test data: each of century, year, month, day as a binary byte.
        return _dt.date(raw[0] * 100 + raw[1], raw[2], raw[3])
    except ValueError:
        raise CertificateError("malformed", f"{what} {text.upper()} is not a date") from None


def _today(at: _dt.datetime | _dt.date | None) -> _dt.date:
    if at is None:
        return _dt.datetime.now(_dt.UTC).date()
    if isinstance(at, _dt.datetime):
        return at.astimezone(_dt.UTC).date() if at.tzinfo else at.date()
    return at


# --- the GP certificate -------------------------------------------------------------------------


@dataclass(frozen=True)
class GPCertificate:
    """One GP ``7F21`` certificate (Amd F Table 6-1).  ``signature`` is empty until signed."""

    serial: bytes
    ca_identifier: bytes
    subject_identifier: bytes
    key_usage: bytes
    expiry: _dt.date
    public_key: ec.EllipticCurvePublicKey
    effective: _dt.date | None = None
    discretionary: bytes | None = None
    discretionary_tag: int = TAG_DISCRETIONARY
    authorizations: bytes | None = None
    signature: bytes = b""
    # The exact signed bytes when parsed from the wire (verification uses them as received).
    _signed: bytes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, value, limit in (
            ("serial", self.serial, 20),
            ("CA identifier", self.ca_identifier, 20),
        ):
            if not 1 <= len(value) <= limit:
                raise CertificateError("malformed", f"{name} must be 1 to {limit} bytes")
        if not 1 <= len(self.key_usage) <= 2:
            raise CertificateError("malformed", "key usage must be 1 or 2 bytes")
        if self.discretionary_tag not in (TAG_DISCRETIONARY, TAG_DISCRETIONARY_CONSTRUCTED):
            raise CertificateError("malformed", "discretionary data tag must be 53 or 73")
        if self.discretionary is not None and not 1 <= len(self.discretionary) <= 127:
            raise CertificateError("malformed", "discretionary data must be 1 to 127 bytes")
        if not isinstance(self.public_key, ec.EllipticCurvePublicKey):
            raise CertificateError("unsupported_curve", "public key must be an EC public key")
        curve_reference(self.public_key.curve)

    # -- encoding --

    def tbs_bytes(self) -> bytes:
        """The signed data (Amd F Table 6-2)."""
        if self._signed is not None:
            return self._signed
        parts = [
            tlv.encode(TAG_SERIAL, self.serial),
            tlv.encode(TAG_CA_ID, self.ca_identifier),
            tlv.encode(TAG_SUBJECT_ID, self.subject_identifier),
            tlv.encode(TAG_KEY_USAGE, self.key_usage),
        ]
        if self.effective is not None:
            parts.append(tlv.encode(TAG_EFFECTIVE, _encode_date(self.effective)))
        parts.append(tlv.encode(TAG_EXPIRY, _encode_date(self.expiry)))
        if self.discretionary is not None:
            parts.append(tlv.encode(self.discretionary_tag, self.discretionary))
        if self.authorizations is not None:
            parts.append(tlv.encode(TAG_AUTHORIZATIONS, self.authorizations))
        key = tlv.encode(TAG_POINT, encode_point(self.public_key)) + tlv.encode(
            TAG_KEY_PARAM, bytes((curve_reference(self.public_key.curve),))
        )
        parts.append(tlv.encode(TAG_PUBLIC_KEY, key))
        return b"".join(parts)

    def to_bytes(self) -> bytes:
        if not self.signature:
            raise CertificateError("malformed", "certificate is not signed")
        return tlv.encode(TAG_CERTIFICATE, self.tbs_bytes() + tlv.encode(TAG_SIGNATURE, self.signature))

    def sign(self, private_key: ec.EllipticCurvePrivateKey) -> GPCertificate:
        """A copy signed with the issuer's ECDSA key (DER signature in ``5F37``)."""
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise CertificateError("unsupported_curve", "issuer key must be an EC private key")
        unsigned = replace(self, signature=b"", _signed=None)
        sig = private_key.sign(unsigned.tbs_bytes(), ec.ECDSA(_hash_for(private_key)))
        return replace(unsigned, signature=sig)

    def verify(self, issuer_public_key: ec.EllipticCurvePublicKey) -> None:
        """Raise :class:`CertificateError` unless the signature verifies with ``issuer_public_key``."""
        if not self.signature:
            raise CertificateError("bad_signature", "certificate is not signed")
        _verify_signature(issuer_public_key, self.signature, self.tbs_bytes(), "GP certificate")

    # -- decoding --

    @classmethod
    def from_bytes(cls, data: bytes) -> GPCertificate:
        """Parse one ``7F21`` certificate spanning all of ``data``; CertificateError when malformed."""
        outer = flat_tlvs(data, "GP certificate")
        if len(outer) != 1 or outer[0][0] != TAG_CERTIFICATE:
            raise CertificateError("malformed", "expected exactly one 7F21 certificate")
        fields: dict[int, bytes] = {}
        signed: list[bytes] = []
        for tag, value, raw in flat_tlvs(outer[0][1], "GP certificate fields"):
            if tag in fields:
                raise CertificateError("malformed", f"tag {tag:X} appears twice")
            if TAG_SIGNATURE in fields:
                raise CertificateError("malformed", "data follows the signature")
            fields[tag] = value
            if tag != TAG_SIGNATURE:
                signed.append(raw)

        def need(tag: int, what: str) -> bytes:
            item = fields.get(tag)
            if item is None:
                raise CertificateError("malformed", f"{what} (tag {tag:X}) is missing")
            return item

        if TAG_DISCRETIONARY in fields and TAG_DISCRETIONARY_CONSTRUCTED in fields:
            raise CertificateError("malformed", "tags 53 and 73 are mutually exclusive")
        known = {
            TAG_SERIAL, TAG_CA_ID, TAG_SUBJECT_ID, TAG_KEY_USAGE, TAG_EFFECTIVE, TAG_EXPIRY,
            TAG_DISCRETIONARY, TAG_DISCRETIONARY_CONSTRUCTED, TAG_AUTHORIZATIONS, TAG_PUBLIC_KEY,
            TAG_SIGNATURE,
        }  # fmt: skip
        unknown = set(fields) - known
        if unknown:
            raise CertificateError("malformed", f"unknown tag {min(unknown):X} in GP certificate")
        key_fields = {t: v for t, v, _ in flat_tlvs(need(TAG_PUBLIC_KEY, "public key"), "public key")}
        point = key_fields.get(TAG_POINT)
        ref = key_fields.get(TAG_KEY_PARAM)
        if point is None or ref is None:
            raise CertificateError("malformed", "public key needs B0 (point) and F0 (parameter reference)")
        if len(ref) not in (1, 2):
            raise CertificateError("malformed", "key parameter reference must be 1 or 2 bytes")
        public_key = decode_point(point, int.from_bytes(ref, "big"))
        effective = fields.get(TAG_EFFECTIVE)
        disc_tag = (
            TAG_DISCRETIONARY_CONSTRUCTED if TAG_DISCRETIONARY_CONSTRUCTED in fields else TAG_DISCRETIONARY
        )
        disc = fields.get(disc_tag)
        auth = fields.get(TAG_AUTHORIZATIONS)
        return cls(
            serial=need(TAG_SERIAL, "serial number"),
            ca_identifier=need(TAG_CA_ID, "CA identifier"),
            subject_identifier=need(TAG_SUBJECT_ID, "subject identifier"),
            key_usage=need(TAG_KEY_USAGE, "key usage"),
            expiry=_decode_date(need(TAG_EXPIRY, "expiration date"), "expiration date"),
            public_key=public_key,
            effective=_decode_date(effective, "effective date") if effective is not None else None,
            discretionary=disc,
            discretionary_tag=disc_tag,
            authorizations=auth,
            signature=need(TAG_SIGNATURE, "signature"),
            _signed=b"".join(signed),
        )


# --- both formats -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertInfo:
    """What chain verification needs from a certificate of either format."""

    format: str  # "gp" or "x509"
    serial: bytes
    subject_identifier: bytes
    public_key: ec.EllipticCurvePublicKey
    can_sign_certificates: bool
    key_agreement: bool
    not_before: _dt.date | None
    not_after: _dt.date
    signature: bytes = field(repr=False)
    signed_data: bytes = field(repr=False)
    raw: bytes = field(repr=False)


def _x509_info(data: bytes) -> CertInfo:
    try:
        cert = x509.load_der_x509_certificate(bytes(data))
        public_key = cert.public_key()
        hash_alg = cert.signature_hash_algorithm
    except (ValueError, TypeError) as e:
        raise CertificateError("malformed", f"X.509 certificate does not decode: {e}") from None
    except x509.UnsupportedGeneralNameType as e:  # pragma: no cover - exotic extensions
        raise CertificateError("malformed", f"X.509 certificate: {e}") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise CertificateError("unsupported_curve", "X.509 certificate does not carry an EC public key")
    curve_reference(public_key.curve)
    if hash_alg is None:
        raise CertificateError("malformed", "X.509 certificate signature algorithm has no hash")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        can_sign = ku.key_cert_sign
        agreement = ku.key_agreement
    except x509.ExtensionNotFound:
        can_sign = agreement = False
    except ValueError as e:
        raise CertificateError("malformed", f"X.509 extensions do not decode: {e}") from None
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        can_sign = can_sign and basic.ca
    except x509.ExtensionNotFound:
        pass
    except ValueError as e:
        raise CertificateError("malformed", f"X.509 extensions do not decode: {e}") from None
    return CertInfo(
        format="x509",
        serial=cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big"),
        subject_identifier=cert.subject.public_bytes(),
        public_key=public_key,
        can_sign_certificates=can_sign,
        key_agreement=agreement,
        not_before=cert.not_valid_before_utc.date(),
        not_after=cert.not_valid_after_utc.date(),
        signature=cert.signature,
        signed_data=cert.tbs_certificate_bytes,
        raw=bytes(data),
    )


def parse_certificate(data: bytes) -> CertInfo:
    """One certificate, X.509 DER (tag ``30``) or GP (``7F21``), as a :class:`CertInfo`."""
    data = bytes(data)
    if data[:2] == b"\x7f\x21":
        gp = GPCertificate.from_bytes(data)
        return CertInfo(
            format="gp",
            serial=gp.serial,
            subject_identifier=gp.subject_identifier,
            public_key=gp.public_key,
            can_sign_certificates=gp.key_usage == KEY_USAGE_SIGNATURE,
            key_agreement=gp.key_usage == KEY_USAGE_AGREEMENT,
            not_before=gp.effective,
            not_after=gp.expiry,
            signature=gp.signature,
            signed_data=gp.tbs_bytes(),
            raw=data,
        )
    if data[:1] == b"\x30":
        return _x509_info(data)
    raise CertificateError("malformed", "certificate is neither X.509 DER (30) nor GP (7F21)")


def split_certificates(data: bytes) -> list[bytes]:
    """Split concatenated certificates (the value of ``BF21``) into single encodings, in order."""
    out = []
    for tag, _value, raw in flat_tlvs(data, "certificate list"):
        if tag not in (0x30, TAG_CERTIFICATE):
            raise CertificateError("malformed", f"tag {tag:X} in a certificate list")
        out.append(raw)
    return out


def check_certificate(
    info: CertInfo,
    issuer_public_key: ec.EllipticCurvePublicKey,
    *,
    leaf: bool,
    at: _dt.datetime | _dt.date | None = None,
    revoked_serials: frozenset[bytes] | set[bytes] = frozenset(),
    what: str = "certificate",
) -> None:
    """One link of a chain: signature by ``issuer_public_key``, dates, revocation, key usage
    (key agreement for the ``leaf``, certificate signing otherwise).  Raises CertificateError."""
    today = _today(at)
    _verify_signature(issuer_public_key, info.signature, info.signed_data, what)
    if info.not_before is not None and today < info.not_before:
        raise CertificateError("not_yet_valid", f"{what} is valid from {info.not_before.isoformat()}")
    if today > info.not_after:
        raise CertificateError("expired", f"{what} expired on {info.not_after.isoformat()}")
    if info.serial in revoked_serials:
        raise CertificateError("revoked", f"{what} (serial {info.serial.hex().upper()}) is revoked")
    if leaf and not info.key_agreement:
        raise CertificateError("key_usage", f"{what} is the leaf and must be for key agreement")
    if not leaf and not info.can_sign_certificates:
        raise CertificateError("key_usage", f"{what} is not allowed to sign certificates")


def verify_chain(
    certs: list[bytes],
    root_public_key: ec.EllipticCurvePublicKey,
    *,
    at: _dt.datetime | _dt.date | None = None,
    revoked_serials: frozenset[bytes] | set[bytes] = frozenset(),
) -> CertInfo:
    """Verify a chain, first certificate signed by ``root_public_key``, leaf LAST; return the leaf.

    For each certificate: the signature against its issuer (the root for the first, the previous
    certificate's key after that), the validity dates against ``at`` (default: now, UTC), the serial
    against ``revoked_serials``, and the key usage: certificate signing for all but the leaf, key
    agreement for the leaf.  All certificates must share one format (Amd F §6).
    """
    if not certs:
        raise CertificateError("empty_chain", "no certificate given")
    today = _today(at)
    infos = [parse_certificate(c) for c in certs]
    if len({i.format for i in infos}) != 1:
        raise CertificateError("mixed_formats", "all certificates of a chain must share one format")
    issuer: ec.EllipticCurvePublicKey = root_public_key
    for n, info in enumerate(infos):
        leaf = n == len(infos) - 1
        check_certificate(
            info,
            issuer,
            leaf=leaf,
            at=today,
            revoked_serials=revoked_serials,
            what=f"certificate {n + 1} of {len(infos)}",
        )
        issuer = info.public_key
    return infos[-1]
