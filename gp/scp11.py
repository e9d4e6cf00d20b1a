"""Secure Channel Protocol '11' (GlobalPlatform Card Spec v2.3 Amendment F v1.4), both sides.

Section references are to Amd F v1.4 (text in ``martinpaljak/GlobalPlatformPro`` ``docs/pdfs/``).
The off-card entity (OCE) side is :class:`HostSession`; the card side is
:func:`card_authenticate`, which returns a :class:`CardSession`.  After the handshake both run the
SCP03 secure messaging of :mod:`gp.scp03` unchanged (Amd F §5.3.2), so every command the software
SE knows works under SCP11 too.

Handshake:

1. SCP11a / SCP11c only — PERFORM SECURITY OPERATION ``80 2A`` (§7.5): the OCE certificate chain,
   one certificate after the other, leaf (CERT.OCE.ECKA) last.  P1 = KVN of PK.CA-KLOC (b8: more
   blocks of this certificate follow), P2 = its KID (b8: more certificates follow).  A certificate
   longer than 255 bytes is cut into 255-byte blocks; the non-final blocks also carry the ISO
   chaining bit in CLA (``90``), as Samsung OpenSCP-Java does — the card reads P1.b8.
2. MUTUAL AUTHENTICATE ``80 82 KVN KID`` (a, c) or INTERNAL AUTHENTICATE ``80 88 KVN KID`` (b)
   (§7.6, §7.7) with ``A6 { 90 02 11 <param>, 95 01 <KUQ>, 80 01 88, 81 01 <L> } 5F49 <ePK.OCE>``;
   param: a = 01, b = 00, c = 03; key usage qualifier (security level): 34 C-MAC+R-MAC, 3C all four,
   1C C-MAC+C-DEC and 74 C-MAC+C-DEC+R-MAC (SCP11c only).
3. Shared secret (§7.6.2.3, §7.7.2.3), ECKA = plain ECDH x-coordinate (BSI TR-03111):
   a: ShSee || ShSss, b: ShSee || ShSes, c: ShSes || ShSss, where ee = ephemeral x ephemeral,
   es = ePK.OCE x SK.SD, ss = SK.OCE x SK.SD.
4. KDF (§3.1.2): ANSI X9.63 with SHA-256 (``cryptography``'s ``X963KDF``), SharedInfo =
   KUQ || key type (88) || L; KeyData = receipt key | S-ENC | S-MAC | S-RMAC | S-DEK, L bytes each
   (Table 7-16; S-DEK serves as the session's Key-DEK: no static Key-DEK exists in SCP11).
5. Receipt (Table 7-17) = AES-CMAC(receipt key, A6 TLV || 5F49 ePK.OCE || 5F49 ePK.SD (a, b) or
   PK.SD (c)), answered as ``5F49 <point> 86 10 <receipt>``.
6. Secure messaging as SCP03 (Amd D §6.2): MAC chaining value := receipt, encryption counter
   starts at 1 with the first command, S8 by default (S16 when both sides choose it).

Host and Card ID in the derivation (SCP parameter b3, tag ``84``) are not supported: a card
answers ``6A80`` to a request for them.  Validated byte for byte against Samsung OpenSCP-Java's
published SCP11a / SCP11c traces (``tests/gp/vectors/scp11_samsung.json``).

Secrets (private keys, shared secrets, session keys) never appear in a ``repr``, log line or
exception message.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from gp import tlv
from gp.apdu import CommandAPDU
from gp.errors import GPError, UsageError
from gp.gpcert import CertificateError, curve_reference, decode_point, encode_point, flat_tlvs
from gp.scp03 import (
    C_DECRYPTION,
    C_MAC,
    R_ENCRYPTION,
    R_MAC,
    SessionKeys,
    StaticKeys,
    _Aes,
    _cmac,
)
from gp.scp03 import CardSession as _SCP03CardSession
from gp.scp03 import HostSession as _SCP03HostSession

__all__ = [
    "KEY_USAGE_QUALIFIERS",
    "KID",
    "CardSession",
    "HostSession",
    "SCP11Error",
    "card_authenticate",
    "derive_keys",
    "receipt",
]

SCP_ID = 0x11
PARAMS = {"a": 0x01, "b": 0x00, "c": 0x03}
_VARIANT_OF_PARAM = {v: k for k, v in PARAMS.items()}
KID = {"a": 0x11, "b": 0x13, "c": 0x15}  # conventional SK.SD.ECKA key identifiers per variant
KEY_TYPE_AES = 0x88
INS_PSO = 0x2A
INS_MUTUAL_AUTHENTICATE = 0x82
INS_INTERNAL_AUTHENTICATE = 0x88
# Key usage qualifier -> SCP03 security level bits (Amd F §5.3.2, Tables 7-15 / 7-21).
KEY_USAGE_QUALIFIERS = {
    0x34: C_MAC | R_MAC,
    0x3C: C_MAC | C_DECRYPTION | R_MAC | R_ENCRYPTION,
    0x1C: C_MAC | C_DECRYPTION,
    0x74: C_MAC | C_DECRYPTION | R_MAC,
}
_SCP11C_ONLY = frozenset({0x1C, 0x74})
TAG_CRT = 0xA6
TAG_EPK = 0x5F49
TAG_RECEIPT = 0x86
_PSO_BLOCK = 255

SW_OK = 0x9000
SW_SECURITY = 0x6982
SW_CONDITIONS = 0x6985
SW_INCORRECT_DATA = 0x6A80
SW_NOT_FOUND = 0x6A88


class SCP11Error(GPError):
    """An SCP11 handshake failure.  ``sw`` is the card's status word, or None when found off-card."""

    def __init__(self, message: str, *, sw: int | None = None) -> None:
        super().__init__(message if sw is None else f"{message} (SW {sw:04X})")
        self.sw = sw


# --- the shared crypto core ---------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class _KeyData:
    receipt_key: bytes
    s_enc: bytes
    s_mac: bytes
    s_rmac: bytes
    s_dek: bytes


def derive_keys(shared_secret: bytes, *, key_usage: int, key_length: int) -> _KeyData:
    """Amd F §3.1.2 / Table 7-16: X9.63 KDF (SHA-256) into receipt key, S-ENC, S-MAC, S-RMAC, S-DEK."""
    if key_length not in (16, 24, 32):
        raise UsageError(f"session key length must be 16, 24 or 32 bytes, got {key_length}")
    info = bytes((key_usage, KEY_TYPE_AES, key_length))
    data = X963KDF(algorithm=hashes.SHA256(), length=5 * key_length, sharedinfo=info).derive(shared_secret)
    parts = [data[i * key_length : (i + 1) * key_length] for i in range(5)]
    return _KeyData(*parts)


def receipt(receipt_key: bytes, crt: bytes, epk_oce_tlv: bytes, sd_point_tlv: bytes) -> bytes:
    """Amd F Table 7-17: AES-CMAC over the A6 TLV, 5F49 ePK.OCE and 5F49 ePK.SD / PK.SD TLVs."""
    return _cmac(_Aes(receipt_key), crt + epk_oce_tlv + sd_point_tlv)


def _ecdh(private_key: ec.EllipticCurvePrivateKey, public_key: ec.EllipticCurvePublicKey) -> bytes:
    return private_key.exchange(ec.ECDH(), public_key)


def _crt(variant: str, key_usage: int, key_length: int) -> bytes:
    return tlv.encode(
        TAG_CRT,
        tlv.encode(0x90, bytes((SCP_ID, PARAMS[variant])))
        + tlv.encode(0x95, bytes((key_usage,)))
        + tlv.encode(0x80, bytes((KEY_TYPE_AES,)))
        + tlv.encode(0x81, bytes((key_length,))),
    )


def _open(channel: _SCP03HostSession | _SCP03CardSession, keys: _KeyData, mac0: bytes, level: int) -> None:
    """Put the SCP03 secure messaging of ``channel`` in the SCP11 session state (Amd F §5.3.2)."""
    channel._session_key_values = (keys.s_enc, keys.s_mac, keys.s_rmac)
    channel._enc, channel._mac, channel._rmac = _Aes(keys.s_enc), _Aes(keys.s_mac), _Aes(keys.s_rmac)
    channel._mcv = mac0
    channel._counter = 0  # incremented before use: the first command uses 1
    channel._level = level
    channel._authenticated = True
    channel._last_command_secured = False  # no R-MAC on the authenticate response


def _check_curve(
    key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey, curve: ec.EllipticCurve, what: str
) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        raise UsageError(f"{what} must be a cryptography EC key")
    if key.curve.name != curve.name:
        raise UsageError(f"{what} is on {key.curve.name}, the SD key on {curve.name}")


# --- off-card entity ----------------------------------------------------------------------------


class HostSession(_SCP03HostSession):
    """The off-card side of one SCP11 session.

    ``authenticate_commands()`` → send each, expecting 9000 → ``complete(last response)`` → then
    ``wrap`` every command and ``unwrap`` every response exactly as :class:`gp.scp03.HostSession`.
    ``dek`` is the session's S-DEK, to encrypt PUT KEY components in this session.

    ``key_version`` / ``key_id`` address SK.SD.ECKA (MUTUAL / INTERNAL AUTHENTICATE P1 / P2);
    ``oce_key_version`` (default: ``key_version``) / ``oce_key_id`` (default ``10``) address the
    PK.CA-KLOC.ECDSA that verifies the OCE chain (PERFORM SECURITY OPERATION P1 / P2).
    ``security_level`` is the key usage qualifier (``3C`` by default).
    """

    def __init__(
        self,
        variant: str,
        *,
        sd_public_key: ec.EllipticCurvePublicKey,
        key_version: int,
        key_id: int,
        oce_private_key: ec.EllipticCurvePrivateKey | None = None,
        oce_certificates: list[bytes] = [],  # noqa: B006 - the issue's signature; never mutated
        ephemeral_private_key: ec.EllipticCurvePrivateKey | None = None,
        session_key_length: int = 16,
        security_level: int = 0x3C,
        oce_key_version: int | None = None,
        oce_key_id: int = 0x10,
        s16: bool = False,
    ) -> None:
        n = 16 if s16 else 8
        # The SCP03 channel state; the real keys are set by complete().
        super().__init__(
            StaticKeys(bytes(16), bytes(16), bytes(16)), security_level=0x01, host_challenge=bytes(n)
        )
        self._authenticated = False
        self._level = 0
        if variant not in PARAMS:
            raise UsageError(f"variant must be 'a', 'b' or 'c', got {variant!r}")
        if not isinstance(sd_public_key, ec.EllipticCurvePublicKey):
            raise UsageError("sd_public_key must be a cryptography EC public key")
        curve = sd_public_key.curve
        for value, what in (
            (key_version, "key version"),
            (key_id, "key identifier"),
            (oce_key_id, "OCE key id"),
        ):
            if not 0 <= value <= 0x7F:
                raise UsageError(f"{what} must be 00..7F")
        if oce_key_version is not None and not 0 <= oce_key_version <= 0x7F:
            raise UsageError("OCE key version must be 00..7F")
        if session_key_length not in (16, 24, 32):
            raise UsageError(f"session key length must be 16, 24 or 32 bytes, got {session_key_length}")
        if security_level not in KEY_USAGE_QUALIFIERS or (security_level in _SCP11C_ONLY and variant != "c"):
            raise UsageError(f"key usage qualifier {security_level:#04x} is not valid for SCP11{variant}")
        certs = tuple(bytes(c) for c in oce_certificates)
        if variant == "b":
            if oce_private_key is not None or certs:
                raise UsageError("SCP11b takes no OCE key or certificates")
        else:
            if oce_private_key is None or not certs:
                raise UsageError(f"SCP11{variant} needs oce_private_key and oce_certificates")
            _check_curve(oce_private_key, curve, "oce_private_key")
        if ephemeral_private_key is None:
            ephemeral_private_key = ec.generate_private_key(curve)
        _check_curve(ephemeral_private_key, curve, "ephemeral_private_key")
        self._variant = variant
        self._sd_public_key = sd_public_key
        self._key_version = key_version
        self._key_id = key_id
        self._oce_private_key = oce_private_key
        self._oce_certificates = certs
        self._oce_key_version = key_version if oce_key_version is None else oce_key_version
        self._oce_key_id = oce_key_id
        self._ephemeral = ephemeral_private_key
        self._key_length = session_key_length
        self._key_usage = security_level
        self._crt = _crt(variant, security_level, session_key_length)
        self._epk_tlv = tlv.encode(TAG_EPK, encode_point(ephemeral_private_key.public_key()))
        self._receipt: bytes | None = None
        self._dek: bytes | None = None
        self._commands_built = False

    @property
    def variant(self) -> str:
        return self._variant

    @property
    def receipt(self) -> bytes | None:
        """The verified receipt (the first MAC chaining value), once :meth:`complete` succeeded."""
        return self._receipt

    @property
    def dek(self) -> bytes:
        """The session's S-DEK (sensitive data, e.g. PUT KEY components)."""
        if self._dek is None:
            raise SCP11Error("no authenticated session yet")
        return self._dek

    def __repr__(self) -> str:
        return (
            f"HostSession(SCP11{self._variant}, kvn={self._key_version:#04x}, kid={self._key_id:#04x}, "
            f"level={self.security_level:#04x}, authenticated={self._authenticated})"
        )

    def initialize_update(self) -> bytes:  # pragma: no cover - SCP03 only
        raise UsageError("SCP11 has no INITIALIZE UPDATE; use authenticate_commands()")

    def external_authenticate(self, response_data: bytes) -> bytes:  # pragma: no cover - SCP03 only
        raise UsageError("SCP11 has no EXTERNAL AUTHENTICATE; use complete()")

    def perform_security_operation_commands(self) -> list[bytes]:
        """PERFORM SECURITY OPERATION, one or more commands per certificate, leaf last (§7.5.2)."""
        out: list[bytes] = []
        certs = self._oce_certificates
        for i, cert in enumerate(certs):
            p2 = self._oce_key_id | (0x80 if i < len(certs) - 1 else 0)
            blocks = [cert[j : j + _PSO_BLOCK] for j in range(0, len(cert), _PSO_BLOCK)]
            for k, block in enumerate(blocks):
                more = k < len(blocks) - 1
                cla = 0x90 if more else 0x80
                p1 = self._oce_key_version | (0x80 if more else 0)
                out.append(CommandAPDU(cla, INS_PSO, p1, p2, block, le=256).encode())
        return out

    def authenticate_commands(self) -> list[bytes]:
        """The PERFORM SECURITY OPERATION chain (a, c), then MUTUAL / INTERNAL AUTHENTICATE."""
        if self._commands_built:
            raise SCP11Error("the handshake was already built for this session; start a new one")
        self._commands_built = True
        ins = INS_INTERNAL_AUTHENTICATE if self._variant == "b" else INS_MUTUAL_AUTHENTICATE
        auth = CommandAPDU(0x80, ins, self._key_version, self._key_id, self._crt + self._epk_tlv, le=256)
        return [*self.perform_security_operation_commands(), auth.encode()]

    def complete(self, response: bytes) -> None:
        """Check the authenticate response (data + SW) and its receipt; open the session.

        Raises :class:`SCP11Error` (with ``sw`` when the card refused) on any mismatch.
        """
        if not self._commands_built:
            raise SCP11Error("authenticate_commands() was not called")
        if self._receipt is not None:
            raise SCP11Error("session already completed")
        raw = bytes(response)
        if len(raw) < 2:
            raise SCP11Error("response shorter than a status word")
        sw = int.from_bytes(raw[-2:], "big")
        if sw != SW_OK:
            raise SCP11Error("the card refused the key agreement", sw=sw)
        try:
            items = flat_tlvs(raw[:-2], "authenticate response")
        except CertificateError as e:
            raise SCP11Error(str(e)) from None
        fields = {t: (v, enc) for t, v, enc in items}
        if len(items) != 2 or TAG_EPK not in fields or TAG_RECEIPT not in fields:
            raise SCP11Error("authenticate response must be 5F49 <point> 86 <receipt>")
        point, point_tlv = fields[TAG_EPK]
        card_receipt = fields[TAG_RECEIPT][0]
        if len(card_receipt) != 16:
            raise SCP11Error("receipt must be 16 bytes")
        curve = self._sd_public_key.curve
        try:
            card_point = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        except ValueError:
            raise SCP11Error(f"card key is not a point on {curve.name}") from None
        if self._variant == "c" and encode_point(card_point) != encode_point(self._sd_public_key):
            raise SCP11Error("SCP11c: the card answered with a key other than PK.SD.ECKA")
        eph = self._ephemeral
        sd = self._sd_public_key
        if self._variant == "a":
            assert self._oce_private_key is not None
            shs = _ecdh(eph, card_point) + _ecdh(self._oce_private_key, sd)
        elif self._variant == "b":
            shs = _ecdh(eph, card_point) + _ecdh(eph, sd)
        else:
            assert self._oce_private_key is not None
            shs = _ecdh(eph, sd) + _ecdh(self._oce_private_key, sd)
        keys = derive_keys(shs, key_usage=self._key_usage, key_length=self._key_length)
        expected = receipt(keys.receipt_key, self._crt, self._epk_tlv, point_tlv)
        if not hmac.compare_digest(expected, card_receipt):
            raise SCP11Error("receipt does not verify: not the expected card, or keys differ")
        self._static = StaticKeys(keys.s_enc, keys.s_mac, keys.s_dek)
        self._dek = keys.s_dek
        self._receipt = card_receipt
        _open(self, keys, card_receipt, KEY_USAGE_QUALIFIERS[self._key_usage])

    @property
    def session_keys(self) -> SessionKeys | None:
        if self._receipt is None:
            return None
        return super().session_keys


# --- card ---------------------------------------------------------------------------------------


class CardSession(_SCP03CardSession):
    """The card side of an open SCP11 session: SCP03 secure messaging with the SCP11 session keys.

    Built by :func:`card_authenticate`; ``decrypt_sensitive`` uses S-DEK.  ``variant`` and
    ``oce_subject`` (the Subject Identifier of CERT.OCE.ECKA; empty for SCP11b) say who opened it.
    """

    variant: str = ""
    oce_subject: bytes = b""

    def __repr__(self) -> str:
        return f"CardSession(SCP11{self.variant}, level={self.security_level:#04x}, authenticated={self.authenticated})"


def _parse_authenticate(data: bytes) -> tuple[bytes, dict[int, bytes], bytes, bytes]:
    """``(crt TLV, crt fields, 5F49 TLV, point)`` of MUTUAL / INTERNAL AUTHENTICATE data; SCP11Error 6A80."""
    try:
        items = flat_tlvs(data, "authenticate data")
        top = {t: (v, enc) for t, v, enc in items}
        if len(items) != 2 or TAG_CRT not in top or TAG_EPK not in top:
            raise SCP11Error("authenticate data must be A6 <CRT> 5F49 <ePK.OCE>", sw=SW_INCORRECT_DATA)
        inner = flat_tlvs(top[TAG_CRT][0], "A6 template")
    except CertificateError as e:
        raise SCP11Error(e.message, sw=SW_INCORRECT_DATA) from None
    fields: dict[int, bytes] = {}
    for tag, value, _ in inner:
        if tag in fields:
            raise SCP11Error(f"tag {tag:X} twice in the A6 template", sw=SW_INCORRECT_DATA)
        fields[tag] = value
    return top[TAG_CRT][1], fields, top[TAG_EPK][1], top[TAG_EPK][0]


def card_authenticate(
    ins: int,
    data: bytes,
    *,
    sd_private_key: ec.EllipticCurvePrivateKey,
    oce_public_key: ec.EllipticCurvePublicKey | None,
    oce_subject: bytes = b"",
    ephemeral_private_key: ec.EllipticCurvePrivateKey | None = None,
    s16: bool = False,
    max_key_length: int = 32,
) -> tuple[CardSession, bytes]:
    """Process MUTUAL AUTHENTICATE (``82``, SCP11a/c) or INTERNAL AUTHENTICATE (``88``, SCP11b).

    ``oce_public_key`` is PK.OCE.ECKA from the preceding PERFORM SECURITY OPERATION (None when
    there was none).  Returns the open session and the response data (``5F49 .. 86 ..``).
    Refusals raise :class:`SCP11Error` with ``sw``: 6A80 malformed or unsupported data, 6985 no
    PK.OCE.ECKA for SCP11a/c.  Nothing is changed on a refusal.
    """
    crt, fields, epk_tlv, epk_point = _parse_authenticate(bytes(data))
    scp = fields.get(0x90)
    if scp is None or len(scp) != 2 or scp[0] != SCP_ID or scp[1] not in _VARIANT_OF_PARAM:
        raise SCP11Error(
            "SCP identifier / parameters not supported (host and card ID unsupported)", sw=SW_INCORRECT_DATA
        )
    variant = _VARIANT_OF_PARAM[scp[1]]
    if (ins == INS_INTERNAL_AUTHENTICATE) != (variant == "b"):
        raise SCP11Error(f"SCP11{variant} does not use instruction {ins:02X}", sw=SW_INCORRECT_DATA)
    kuq = fields.get(0x95)
    if (
        kuq is None
        or len(kuq) != 1
        or kuq[0] not in KEY_USAGE_QUALIFIERS
        or (kuq[0] in _SCP11C_ONLY and variant != "c")
    ):
        raise SCP11Error("key usage qualifier not supported", sw=SW_INCORRECT_DATA)
    if fields.get(0x80) != bytes((KEY_TYPE_AES,)):
        raise SCP11Error("key type must be AES (88)", sw=SW_INCORRECT_DATA)
    length = fields.get(0x81)
    if length is None or len(length) != 1 or length[0] not in (16, 24, 32) or length[0] > max_key_length:
        raise SCP11Error("key length must be 16, 24 or 32", sw=SW_INCORRECT_DATA)
    if set(fields) - {0x90, 0x95, 0x80, 0x81}:
        raise SCP11Error("unexpected data object in the A6 template", sw=SW_INCORRECT_DATA)
    curve = sd_private_key.curve
    try:
        epk_oce = decode_point(epk_point, curve_reference(curve))
    except CertificateError:
        raise SCP11Error(f"ePK.OCE.ECKA is not a point on {curve.name}", sw=SW_INCORRECT_DATA) from None
    if variant != "b" and oce_public_key is None:
        raise SCP11Error("no PK.OCE.ECKA: PERFORM SECURITY OPERATION must come first", sw=SW_CONDITIONS)
    if variant == "c":
        sd_point = encode_point(sd_private_key.public_key())
        shs = _ecdh(sd_private_key, epk_oce) + _ecdh(sd_private_key, oce_public_key)  # type: ignore[arg-type]
    else:
        eph = ephemeral_private_key or ec.generate_private_key(curve)
        if eph.curve.name != curve.name:
            raise UsageError("ephemeral key on the wrong curve")
        sd_point = encode_point(eph.public_key())
        second = epk_oce if variant == "b" else oce_public_key
        shs = _ecdh(eph, epk_oce) + _ecdh(sd_private_key, second)  # type: ignore[arg-type]
    keys = derive_keys(shs, key_usage=kuq[0], key_length=length[0])
    point_tlv = tlv.encode(TAG_EPK, sd_point)
    card_receipt = receipt(keys.receipt_key, crt, epk_tlv, point_tlv)
    n = 16 if s16 else 8
    session = CardSession(StaticKeys(keys.s_enc, keys.s_mac, keys.s_dek), host_challenge=bytes(n))
    session.variant = variant
    session.oce_subject = bytes(oce_subject) if variant != "b" else b""
    session._state = "open"
    _open(session, keys, card_receipt, KEY_USAGE_QUALIFIERS[kuq[0]])
    return session, point_tlv + tlv.encode(TAG_RECEIPT, card_receipt)
