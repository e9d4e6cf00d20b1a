"""X.509 certificates and CRLs assembled around a ``Signer``'s signature (RFC 5280).

One code path for every signer: the to-be-signed structure is built with ``asn1crypto``, its DER
is handed to ``Signer.sign`` (ECDSA P-256 with SHA-256, DER signature), and the signed structure
is put together around the answer. No private key object is ever needed here, so a key in a
PKCS#11 token signs exactly as a key sealed in the vault does.

Also the parsing of untrusted input: ``csr_parse`` (PKCS#10 PEM, P-256 only, signature checked)
and ``public_key_parse`` (a CASD key as SPKI DER or an uncompressed P-256 point).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import crl as acrl
from asn1crypto import keys as akeys
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keys.signing import Signer
from portal.errors import InvalidError

MAX_CSR_BYTES = 8 * 1024
SIG_ALG = {"algorithm": "sha256_ecdsa"}
UB_NAME = 64  # RFC 5280 upper bound of CN, O, OU


class CertificateInputError(InvalidError):
    """A CSR or public key we refuse; ``code`` says which check failed (stable, for clients)."""

    code = "invalid_certificate_request"


# --- names, keys, times -------------------------------------------------------------------------


def name_der(*, common_name: str, organisation: str = "", unit: str = "", serial_number: str = "") -> bytes:
    """An X.509 Name (DER) with the given attributes, each cut to the RFC 5280 upper bound."""
    attrs = []
    if organisation:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation[:UB_NAME]))
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit[:UB_NAME]))
    if serial_number:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number[:UB_NAME]))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name[:UB_NAME] or "-"))
    return x509.Name(attrs).public_bytes()


def subject_text(certificate_der: bytes) -> str:
    """The RFC 4514 text of a certificate's subject (for display and search)."""
    return x509.load_der_x509_certificate(certificate_der).subject.rfc4514_string()


def key_identifier(public_der: bytes) -> bytes:
    """SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2, method 1)."""
    info = akeys.PublicKeyInfo.load(public_der)
    return hashlib.sha1(bytes(info["public_key"]), usedforsecurity=False).digest()


def spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def random_serial() -> int:
    """A positive 127-bit serial number: unpredictable, unique in practice (RFC 5280 §4.1.2.2)."""
    return secrets.randbits(127) | (1 << 126)


def _time(value: datetime) -> ax509.Time:
    value = value.astimezone(UTC).replace(microsecond=0)
    # RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
    return ax509.Time({"utc_time" if value.year < 2050 else "general_time": value})


def second(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


# --- certificates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """What kind of certificate: a CA root, a CASD key-agreement key, or an off-card entity key."""

    ca: bool
    key_usage: frozenset[str]


ROOT = Profile(ca=True, key_usage=frozenset({"key_cert_sign", "crl_sign"}))
CASD = Profile(ca=False, key_usage=frozenset({"key_agreement"}))
# An OCE key signs (key-loading packages, SCP11 receipts' origin) and, in SCP11a, takes part in the
# static key agreement (ShSes = ECDH(SK.OCE, PK.SD)): both bits.
OCE = Profile(ca=False, key_usage=frozenset({"digital_signature", "key_agreement"}))


def certificate_build(
    *,
    signer: Signer,
    issuer_name: bytes,
    issuer_key_id: bytes,
    subject_name: bytes,
    subject_public_key: bytes,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    profile: Profile,
) -> bytes:
    """A DER X.509 v3 certificate signed by ``signer`` (ecdsa-with-SHA256)."""
    extensions = [
        {
            "extn_id": "basic_constraints",
            "critical": True,
            "extn_value": {"ca": True, "path_len_constraint": 0} if profile.ca else {"ca": False},
        },
        {"extn_id": "key_usage", "critical": True, "extn_value": set(profile.key_usage)},
        {"extn_id": "key_identifier", "critical": False, "extn_value": key_identifier(subject_public_key)},
    ]
    if not profile.ca:
        extensions.append(
            {
                "extn_id": "authority_key_identifier",
                "critical": False,
                "extn_value": {"key_identifier": issuer_key_id},
            }
        )
    tbs = ax509.TbsCertificate(
        {
            "version": "v3",
            "serial_number": serial,
            "signature": SIG_ALG,
            "issuer": ax509.Name.load(issuer_name),
            "validity": {"not_before": _time(not_before), "not_after": _time(not_after)},
            "subject": ax509.Name.load(subject_name),
            "subject_public_key_info": akeys.PublicKeyInfo.load(subject_public_key),
            "extensions": extensions,
        }
    )
    signature = signer.sign(tbs.dump())
    return ax509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": SIG_ALG, "signature_value": signature}
    ).dump()


@dataclass(frozen=True)
class Revoked:
    serial: int
    revoked_at: datetime
    reason: str  # an asn1crypto CRLReason name: key_compromise, superseded…


def crl_build_der(
    *,
    signer: Signer,
    issuer_name: bytes,
    issuer_key_id: bytes,
    number: int,
    this_update: datetime,
    next_update: datetime,
    revoked: list[Revoked],
) -> bytes:
    """A DER X.509 v2 CRL signed by ``signer``, with CRL number and authority key identifier."""
    tbs: dict[str, object] = {
        "version": "v2",
        "signature": SIG_ALG,
        "issuer": ax509.Name.load(issuer_name),
        "this_update": _time(this_update),
        "next_update": _time(next_update),
        "crl_extensions": [
            {"extn_id": "crl_number", "critical": False, "extn_value": number},
            {
                "extn_id": "authority_key_identifier",
                "critical": False,
                "extn_value": {"key_identifier": issuer_key_id},
            },
        ],
    }
    if revoked:  # RFC 5280 §5.1.2.6: absent, not empty, when nothing is revoked
        tbs["revoked_certificates"] = [
            {
                "user_certificate": r.serial,
                "revocation_date": _time(r.revoked_at),
                "crl_entry_extensions": [
                    {"extn_id": "crl_reason", "critical": False, "extn_value": r.reason}
                ],
            }
            for r in revoked
        ]
    tbs_list = acrl.TbsCertList(tbs)
    signature = signer.sign(tbs_list.dump())
    return acrl.CertificateList(
        {"tbs_cert_list": tbs_list, "signature_algorithm": SIG_ALG, "signature": signature}
    ).dump()


# --- untrusted input -------------------------------------------------------------------------------


def _p256(key: object, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateInputError(
            f"{what} must be an ECDSA P-256 (secp256r1) key; other curves and RSA are refused.",
            code="wrong_curve",
        )
    return key


def public_key_parse(value: object) -> ec.EllipticCurvePublicKey:
    """A CASD public key: a ``cryptography`` P-256 key, SPKI DER, or an uncompressed point (65 bytes)."""
    if isinstance(value, ec.EllipticCurvePublicKey):
        return _p256(value, "The public key")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise CertificateInputError(
            "The public key must be bytes (SPKI DER or 04‖X‖Y).", code="bad_public_key"
        )
    raw = bytes(value)
    if len(raw) == 65 and raw[0] == 0x04:
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise CertificateInputError("The point is not on P-256.", code="bad_public_key") from None
    try:
        key = serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateInputError(
            "The public key is neither SPKI DER nor an uncompressed P-256 point.", code="bad_public_key"
        ) from None
    return _p256(key, "The public key")


def csr_parse(csr_pem: object) -> ec.EllipticCurvePublicKey:
    """The public key of a PKCS#10 CSR in PEM, after checking it is P-256 and self-signed by it.

    Only the key is taken: subject, attributes and requested extensions are the requester's
    wishes, and the CA decides those itself.
    """
    if not isinstance(csr_pem, str | bytes):
        raise CertificateInputError("csr must be a PEM text.", code="csr_not_pem")
    raw = csr_pem.encode("utf-8", "replace") if isinstance(csr_pem, str) else csr_pem
    if len(raw) > MAX_CSR_BYTES:
        raise CertificateInputError(
            f"The CSR is larger than {MAX_CSR_BYTES} bytes; a P-256 CSR is well under 1 KiB.",
            code="csr_too_large",
        )
    if (
        b"-----BEGIN CERTIFICATE REQUEST-----" not in raw
        and b"-----BEGIN NEW CERTIFICATE REQUEST-----" not in raw
    ):
        raise CertificateInputError(
            "csr must be a PEM 'CERTIFICATE REQUEST' block (PKCS#10).", code="csr_not_pem"
        )
    try:
        csr = x509.load_pem_x509_csr(raw.replace(b"NEW CERTIFICATE REQUEST", b"CERTIFICATE REQUEST"))
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateInputError("The CSR does not parse as PKCS#10.", code="csr_malformed") from None
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateInputError("The CSR's public key does not parse.", code="csr_malformed") from None
    key = _p256(key, "The CSR's key")
    try:
        algorithm = csr.signature_hash_algorithm
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateInputError(
            "The CSR's signature algorithm is not supported.", code="csr_bad_signature"
        ) from None
    if not isinstance(algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512) or not valid:
        raise CertificateInputError(
            "The CSR's signature does not verify with its own key (ECDSA with SHA-256/384/512 expected).",
            code="csr_bad_signature",
        )
    return key


__all__ = [
    "CASD",
    "OCE",
    "ROOT",
    "CertificateInputError",
    "Revoked",
    "certificate_build",
    "crl_build_der",
    "csr_parse",
    "key_identifier",
    "name_der",
    "public_key_parse",
    "random_serial",
    "second",
    "spki_der",
    "subject_text",
]
