"""The software SE's Controlling Authority Security Domain (CASD) and its SCP11 card side.

The CASD key pair (ECC P-256, SK.SD.ECKA / PK.SD.ECKA of GP Amd F, CERT.CASD.ECKA of Amd A) is
generated inside the card by :meth:`gp.card.SoftCard.create` and kept in the card's sealed state
(:class:`Casd`).  No APDU and no Python accessor returns the private key: only the public key
(:func:`casd_public_key`) leaves, and other card modules use the private key through
:func:`casd_key_agreement` (ECDH inside the card).  The ISD answers SCP11 with it under key version
:attr:`Casd.kvn` (default ``01``) and the Amd F key identifiers ``11`` (a), ``13`` (b), ``15`` (c).

Personalisation (STORE DATA to the ISD, DGI structure, P1 b5..b4 = 01, in an authenticated secure
channel session — SCP03 or SCP11; the DGIs may be mixed with others in one STORE DATA sequence):

- DGI ``7F21`` — the CASD certificate store (the ``BF21`` answer): certificates concatenated,
  first one signed by the CA (CA-KLCC), leaf CERT.SD.ECKA last, each X.509 DER or GP ``7F21``, all
  one format.  The leaf must certify the CASD public key for key agreement (else ``6A80``).  It
  replaces the store; an empty value deletes it.
- DGI ``7F49`` — a CA-KLOC public key (PK.CA-KLOC.ECDSA, verifies OCE certificate chains):
  ``83 02 <KID> <KVN>`` then ``B0 <uncompressed point>`` ``F0 <key parameter reference>`` and
  optionally ``42 <CA-KLOC identifier>``.  Replaces the key with that reference; ``83`` alone
  deletes it.  P-256 / P-384 / P-521 / brainpool references (GPCS Table B-2) are accepted.
- DGI ``0093`` — revoked certificate serial numbers: ``93 <serial>`` repeated; replaces the list
  (empty value: no list).  Any certificate of an OCE chain with a listed serial is refused (6640).

SCP11 commands (Amd F §7), on the ISD only (other SDs answer ``6A88``):

- GET DATA ``BF21`` with ``A6 { 83 02 KID KVN }``: the certificate store, ``6A88`` when the key
  reference is not the CASD's or no store is loaded.
- PERFORM SECURITY OPERATION ``2A`` (:func:`perform_security_operation`): the OCE chain, one
  certificate per command sequence (P1.b8 = more blocks, P2.b8 = more certificates), checked link by
  link with :func:`gp.gpcert.check_certificate` against the CA-KLOC key P1/P2 reference (P1 = 00:
  inferred from the first certificate's CA identifier, or the only CA key loaded).  Status words
  (Amd F Table 7-13 where it names one): ``6600`` signature or validity dates fail, ``6640``
  revoked serial, ``6A80`` malformed data or wrong key usage, ``6A87`` mixed certificate formats,
  ``6A88`` CA-KLOC key not found.  Any refusal forgets the chain received so far.
- MUTUAL AUTHENTICATE ``82`` (a, c; P2 != 00, so never confused with SCP03's EXTERNAL
  AUTHENTICATE) / INTERNAL AUTHENTICATE ``88`` (b): :func:`gp.scp11.card_authenticate`; ``6985``
  without a verified OCE chain (a, c), ``6A88`` for another key reference, ``6A80`` bad data.

None of these changes the persistent state; a refused command leaves the channel's previous
secure channel session ended (Amd F: MUTUAL / INTERNAL AUTHENTICATE terminate it).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from gp import tlv
from gp.gpcert import (
    CertificateError,
    CertInfo,
    check_certificate,
    curve_reference,
    decode_point,
    encode_point,
    flat_tlvs,
    parse_certificate,
    split_certificates,
)

__all__ = [
    "CASD_KIDS",
    "DGI_CA_KEY",
    "DGI_CERTIFICATE_STORE",
    "DGI_REVOKED_SERIALS",
    "CaKey",
    "Casd",
    "OcePending",
    "casd_key_agreement",
    "casd_public_key",
    "certificate_store_answer",
    "perform_security_operation",
    "store_casd_dgi",
    "verify_oce_chain",
]

DGI_CERTIFICATE_STORE = 0x7F21
DGI_CA_KEY = 0x7F49
DGI_REVOKED_SERIALS = 0x0093
CASD_DGIS = frozenset({DGI_CERTIFICATE_STORE, DGI_CA_KEY, DGI_REVOKED_SERIALS})
CASD_KIDS = frozenset({0x11, 0x13, 0x15})
DEFAULT_CASD_KVN = 0x01
MAX_CERTIFICATE = 2048  # bytes of one certificate received through PERFORM SECURITY OPERATION
MAX_CHAIN = 4

SW_OK = 0x9000
SW_VERIFICATION_FAILED = 0x6600
SW_NOT_ALLOWED = 0x6640
SW_WRONG_DATA = 0x6A80
SW_FORMAT = 0x6A87
SW_NOT_FOUND = 0x6A88
SW_CONDITIONS = 0x6985
SW_P1P2 = 0x6A86


class CasdError(Exception):
    """A CASD command is refused with ``sw`` (the caller answers it; nothing was changed)."""

    def __init__(self, sw: int, reason: str = "") -> None:
        super().__init__(f"{sw:04X} {reason}")
        self.sw = sw
        self.reason = reason


@dataclass
class CaKey:
    """A PK.CA-KLOC.ECDSA loaded into the ISD."""

    kid: int
    kvn: int
    point: bytes
    curve_ref: int = 0x00
    identifier: bytes = b""

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return decode_point(self.point, self.curve_ref)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "kvn": self.kvn,
            "point": self.point.hex(),
            "ref": self.curve_ref,
            "id": self.identifier.hex(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaKey:
        return cls(d["kid"], d["kvn"], bytes.fromhex(d["point"]), d["ref"], bytes.fromhex(d["id"]))


@dataclass
class Casd:
    """The CASD's persistent data: its key pair, certificate store, CA keys and revoked serials."""

    private_value: bytes = field(repr=False)
    kvn: int = DEFAULT_CASD_KVN
    certificates: list[bytes] = field(default_factory=list)
    ca_keys: list[CaKey] = field(default_factory=list)
    revoked: list[bytes] = field(default_factory=list)
    _key: ec.EllipticCurvePrivateKey | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def generate(cls, *, kvn: int = DEFAULT_CASD_KVN) -> Casd:
        """A fresh P-256 key pair, generated here, inside the card."""
        key = ec.generate_private_key(ec.SECP256R1())
        casd = cls(key.private_numbers().private_value.to_bytes(32, "big"), kvn)
        casd._key = key
        return casd

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """For the card's own modules only (see the module docstring)."""
        if self._key is None:
            self._key = ec.derive_private_key(int.from_bytes(self.private_value, "big"), ec.SECP256R1())
        return self._key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key().public_key()

    def ca_key(self, kvn: int, kid: int) -> CaKey | None:
        return next((k for k in self.ca_keys if k.kvn == kvn and k.kid == kid), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sk": self.private_value.hex(),
            "kvn": self.kvn,
            "certs": [c.hex() for c in self.certificates],
            "ca": [k.to_dict() for k in self.ca_keys],
            "revoked": [s.hex() for s in self.revoked],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Casd:
        return cls(
            bytes.fromhex(d["sk"]),
            d["kvn"],
            [bytes.fromhex(c) for c in d["certs"]],
            [CaKey.from_dict(k) for k in d["ca"]],
            [bytes.fromhex(s) for s in d["revoked"]],
        )


# --- accessors for the rest of the card and the system -----------------------------------------


def _casd(state: Any) -> Casd:
    casd = getattr(state, "casd", None)
    if casd is None:
        raise CasdError(SW_NOT_FOUND, "this card has no CASD")
    return casd


def casd_public_key(state: Any) -> ec.EllipticCurvePublicKey:
    """PK.CASD (= PK.SD.ECKA of the ISD)."""
    return _casd(state).public_key()


def casd_key_agreement(state: Any, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
    """ECDH (ECKA, x-coordinate) between SK.CASD and ``peer_public_key``, inside the card.

    For card modules such as confidential key loading; raises :class:`CasdError` (6A80) when the
    peer key is not a P-256 public key, 6A88 when the card has no CASD.
    """
    key = _casd(state).private_key()
    if (
        not isinstance(peer_public_key, ec.EllipticCurvePublicKey)
        or peer_public_key.curve.name != key.curve.name
    ):
        raise CasdError(SW_WRONG_DATA, "peer key is not a public key on the CASD's curve")
    return key.exchange(ec.ECDH(), peer_public_key)


def _certificate_error_sw(e: CertificateError) -> int:
    return {
        "bad_signature": SW_VERIFICATION_FAILED,
        "expired": SW_VERIFICATION_FAILED,
        "not_yet_valid": SW_VERIFICATION_FAILED,
        "revoked": SW_NOT_ALLOWED,
        "mixed_formats": SW_FORMAT,
    }.get(e.code, SW_WRONG_DATA)


def _today() -> _dt.date:
    return _dt.datetime.now(_dt.UTC).date()


def _find_ca(casd: Casd, kvn: int, kid: int, first: CertInfo, raw_first: bytes) -> CaKey:
    if kvn:
        ca = casd.ca_key(kvn, kid)
        if ca is None:
            raise CasdError(SW_NOT_FOUND, f"no PK.CA-KLOC.ECDSA with KVN {kvn:02X} KID {kid:02X}")
        return ca
    # P1 = 00: inferred from the CA identifier of the first certificate (Amd F §7.5.2.1).
    if first.format == "gp":
        ca_id = next((v for t, v, _ in flat_tlvs(flat_tlvs(raw_first)[0][1]) if t == 0x42), b"")
        match = [k for k in casd.ca_keys if k.identifier and k.identifier == ca_id]
        if len(match) == 1:
            return match[0]
    if len(casd.ca_keys) == 1:
        return casd.ca_keys[0]
    raise CasdError(SW_NOT_FOUND, "cannot infer the PK.CA-KLOC.ECDSA from the certificate")


def verify_oce_chain(state: Any, certs: list[bytes], *, kvn: int = 0, kid: int = 0) -> CertInfo:
    """Verify an OCE chain (leaf last) to a CA-KLOC key the ISD holds; return the leaf.

    The card-side check shared by PERFORM SECURITY OPERATION and confidential key loading.
    Raises :class:`CasdError` with the PERFORM SECURITY OPERATION status words (module docstring).
    """
    casd = _casd(state)
    if not certs or len(certs) > MAX_CHAIN:
        raise CasdError(SW_WRONG_DATA, f"an OCE chain has 1 to {MAX_CHAIN} certificates")
    try:
        infos = [parse_certificate(c) for c in certs]
        if len({i.format for i in infos}) != 1:
            raise CertificateError("mixed_formats", "all certificates of a chain must share one format")
        issuer = _find_ca(casd, kvn, kid, infos[0], certs[0]).public_key()
        revoked = frozenset(casd.revoked)
        today = _today()
        for n, info in enumerate(infos):
            leaf = n == len(infos) - 1
            check_certificate(info, issuer, leaf=leaf, at=today, revoked_serials=revoked)
            issuer = info.public_key
    except CertificateError as e:
        raise CasdError(_certificate_error_sw(e), e.message) from None
    return infos[-1]


# --- GET DATA BF21 -------------------------------------------------------------------------------


def certificate_store_answer(state: Any, data: bytes) -> bytes:
    """GET DATA ``BF21`` with ``A6 { 83 02 KID KVN }`` (Amd F §7.2): ``BF21 { certificates }``."""
    casd = _casd(state)
    try:
        items = flat_tlvs(data, "GET DATA BF21 data")
        if len(items) != 1 or items[0][0] != 0xA6:
            raise CertificateError("malformed", "expected A6 { 83 02 KID KVN }")
        inner = flat_tlvs(items[0][1], "A6 template")
    except CertificateError as e:
        raise CasdError(SW_WRONG_DATA, e.message) from None
    ref = [v for t, v, _ in inner if t == 0x83]
    if len(inner) != 1 or len(ref) != 1 or len(ref[0]) != 2:
        raise CasdError(SW_WRONG_DATA, "expected A6 { 83 02 KID KVN }")
    kid, kvn = ref[0]
    if kid not in CASD_KIDS or kvn != casd.kvn or not casd.certificates:
        raise CasdError(SW_NOT_FOUND, "no certificate store for that key reference")
    return tlv.encode(0xBF21, b"".join(casd.certificates))


# --- STORE DATA DGIs ------------------------------------------------------------------------------


def store_casd_dgi(state: Any, tag: int, value: bytes) -> None:
    """Apply one CASD DGI (module docstring) to the card state; CasdError (6A80 / 6A88) on bad data."""
    casd = _casd(state)
    if tag == DGI_CERTIFICATE_STORE:
        if not value:
            casd.certificates = []
            return
        try:
            certs = split_certificates(value)
            infos = [parse_certificate(c) for c in certs]
        except CertificateError as e:
            raise CasdError(SW_WRONG_DATA, e.message) from None
        if len({i.format for i in infos}) != 1:
            raise CasdError(SW_WRONG_DATA, "certificate store mixes X.509 and GP certificates")
        leaf = infos[-1]
        if encode_point(leaf.public_key) != encode_point(casd.public_key()) or not leaf.key_agreement:
            raise CasdError(SW_WRONG_DATA, "the last certificate must certify the CASD key for key agreement")
        casd.certificates = certs
    elif tag == DGI_CA_KEY:
        try:
            fields: dict[int, bytes] = {}
            for t, v, _ in flat_tlvs(value, "CA key DGI"):
                if t in fields or t not in (0x83, 0xB0, 0xF0, 0x42):
                    raise CertificateError("malformed", f"tag {t:X} unexpected or repeated")
                fields[t] = v
            ref = fields.get(0x83)
            if ref is None or len(ref) != 2:
                raise CertificateError("malformed", "83 02 KID KVN is required")
            kid, kvn = ref
            if not 1 <= kvn <= 0x7F or not 0 <= kid <= 0x7F:
                raise CertificateError("malformed", "KID / KVN out of range")
            casd.ca_keys = [k for k in casd.ca_keys if (k.kid, k.kvn) != (kid, kvn)]
            if set(fields) == {0x83}:
                return
            point, cref = fields.get(0xB0), fields.get(0xF0)
            if point is None or cref is None or len(cref) != 1:
                raise CertificateError(
                    "malformed", "B0 (point) and F0 (1-byte parameter reference) are required"
                )
            key = decode_point(point, cref[0])
            curve_reference(key.curve)
        except CertificateError as e:
            raise CasdError(SW_WRONG_DATA, e.message) from None
        casd.ca_keys.append(CaKey(kid, kvn, bytes(point), cref[0], fields.get(0x42, b"")))
    elif tag == DGI_REVOKED_SERIALS:
        try:
            items = flat_tlvs(value, "revoked serials DGI")
        except CertificateError as e:
            raise CasdError(SW_WRONG_DATA, e.message) from None
        if any(t != 0x93 or not 1 <= len(v) <= 20 for t, v, _ in items):
            raise CasdError(SW_WRONG_DATA, "revoked serials are 93 <1..20 bytes> TLVs")
        casd.revoked = [v for _, v, _ in items]
    else:  # pragma: no cover - callers filter on CASD_DGIS
        raise CasdError(SW_WRONG_DATA, f"DGI {tag:04X} is not a CASD DGI")


# --- PERFORM SECURITY OPERATION ------------------------------------------------------------------


@dataclass
class OcePending:
    """Per-channel PERFORM SECURITY OPERATION progress (transient, never persisted)."""

    kvn: int = 0
    kid: int = 0
    block: bytearray = field(default_factory=bytearray)
    chain: list[bytes] = field(default_factory=list)
    issuer: ec.EllipticCurvePublicKey | None = None
    format: str = ""
    oce_key: ec.EllipticCurvePublicKey | None = None  # set when the chain is complete
    oce_subject: bytes = b""


def perform_security_operation(state: Any, pending: OcePending, p1: int, p2: int, data: bytes) -> None:
    """One PERFORM SECURITY OPERATION command (Amd F §7.5); updates ``pending`` or raises CasdError.

    The caller discards ``pending`` on a refusal (the whole chain must be sent again).
    """
    casd = _casd(state)
    if pending.oce_key is not None:  # a new chain after a complete one
        pending.__init__()  # type: ignore[misc]
    if not data:
        raise CasdError(SW_WRONG_DATA, "no certificate data")
    kvn, kid = p1 & 0x7F, p2 & 0x7F
    if not pending.chain and not pending.block:
        pending.kvn, pending.kid = kvn, kid
    pending.block += data
    if len(pending.block) > MAX_CERTIFICATE:
        raise CasdError(SW_WRONG_DATA, "certificate too long")
    if p1 & 0x80:
        return  # more blocks of this certificate follow
    raw = bytes(pending.block)
    pending.block = bytearray()
    more_certificates = bool(p2 & 0x80)
    if len(pending.chain) >= MAX_CHAIN or (more_certificates and len(pending.chain) + 1 >= MAX_CHAIN):
        raise CasdError(SW_WRONG_DATA, f"OCE chain longer than {MAX_CHAIN} certificates")
    try:
        info = parse_certificate(raw)
        if pending.format and info.format != pending.format:
            raise CertificateError("mixed_formats", "all certificates of a chain must share one format")
        issuer = pending.issuer
        if issuer is None:
            issuer = _find_ca(casd, pending.kvn, pending.kid, info, raw).public_key()
        check_certificate(
            info, issuer, leaf=not more_certificates, at=_today(), revoked_serials=frozenset(casd.revoked)
        )
    except CertificateError as e:
        raise CasdError(_certificate_error_sw(e), e.message) from None
    pending.chain.append(raw)
    pending.format = info.format
    pending.issuer = info.public_key
    if not more_certificates:
        pending.oce_key = info.public_key
        pending.oce_subject = info.subject_identifier
