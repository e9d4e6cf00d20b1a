"""Secure Channel Protocol '03' (GlobalPlatform Card Spec v2.3 Amendment D v1.1.2 / v1.2), both sides.

One crypto core is shared by the off-card entity (:class:`HostSession`) and the card
(:class:`CardSession`), so they cannot drift apart.  Section references are to Amendment D v1.2
("Amd D") and GP Card Spec v2.3.1 ("GPCS"):

- Data derivation scheme, NIST SP 800-108 counter mode with AES-CMAC (Amd D §4.1.5, Table 4-1):
  :func:`kdf`.
- "i" parameter: S8/S16 mode, random / pseudo-random card challenge, R-MAC / R-ENC support
  (Amd D §5.1, Table 5-1).
- Current Security Level and protocol rules, session abort on security errors (Amd D §5.5, §5.6).
- Session keys S-ENC / S-MAC / S-RMAC (Amd D §6.2.1, Table 6-2).
- Pseudo-random card challenge from Key-ENC, sequence counter and SD AID (Amd D §6.2.2.1):
  :func:`pseudo_random_card_challenge`; card and host cryptograms (§6.2.2.2, §6.2.2.3).
- MAC chaining value, C-MAC on EXTERNAL AUTHENTICATE (§6.2.3) and commands (§6.2.4); the
  chaining value advances with every verified C-MAC whatever status word the card then answers.
- R-MAC, only on 9000 / 62xx / 63xx, never on EXTERNAL AUTHENTICATE (§6.2.5).
- C-DECRYPTION: encryption counter starting at 1, incremented for *every* command, with or without
  data; ICV = AES(S-ENC, counter block); padding ``80 00..`` (GPCS B.2.3) (§6.2.6).
- R-ENCRYPTION: ICV = AES(S-ENC, counter block with its first byte set to ``80``) (§6.2.7).
- Sensitive data with the static Key-DEK, AES-CBC, zero ICV (§6.2.8): :func:`encrypt_dek`,
  :func:`decrypt_dek`; key check value (GPCS §11.8.2.3 / B.2): :func:`kcv`.
- INITIALIZE UPDATE and EXTERNAL AUTHENTICATE messages (§7.1.1, §7.1.2, Tables 7-2 .. 7-7).

Not covered here: BEGIN/END R-MAC SESSION (§7.1.3, §7.1.4) and GPCS §11.1.5 command chaining of
secured commands (P1.b8 "more commands"), which belong to the card-management layer above.

Secrets (static and session keys) never appear in a ``repr``, log line or exception message; key
check values stand in for them.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gp.apdu import (
    MAC_CLA,
    PLAIN_CLA,
    SM_CLA,
    CommandAPDU,
    ResponseAPDU,
    _cla_for,
    is_success_or_warning,
    mac_class_byte,
    split_short,
)
from gp.errors import GPError, UsageError

__all__ = [
    "C_DECRYPTION",
    "C_MAC",
    "CardSession",
    "HostSession",
    "I_PSEUDO_RANDOM",
    "I_R_ENCRYPTION",
    "I_R_MAC",
    "I_S16",
    "NO_SECURITY",
    "R_ENCRYPTION",
    "R_MAC",
    "SCP03Error",
    "SessionKeys",
    "StaticKeys",
    "VALID_SECURITY_LEVELS",
    "decrypt_dek",
    "encrypt_dek",
    "encrypt_key_component",
    "kcv",
    "kdf",
    "pseudo_random_card_challenge",
]

# Security level bits, EXTERNAL AUTHENTICATE P1 (Amd D Table 7-6).
NO_SECURITY = 0x00
C_MAC = 0x01
C_DECRYPTION = 0x02
R_MAC = 0x10
R_ENCRYPTION = 0x20
VALID_SECURITY_LEVELS = frozenset({0x00, 0x01, 0x03, 0x11, 0x13, 0x33})

# "i" parameter bits (Amd D Table 5-1).
I_S16 = 0x01
I_PSEUDO_RANDOM = 0x10
I_R_MAC = 0x20
I_R_ENCRYPTION = 0x40
_I_RESERVED = 0x8E  # b8 reserved, b4..b2 RFU

# Derivation constants (Amd D Table 4-1).
DC_CARD_CRYPTOGRAM = 0x00
DC_HOST_CRYPTOGRAM = 0x01
DC_CARD_CHALLENGE = 0x02
DC_S_ENC = 0x04
DC_S_MAC = 0x06
DC_S_RMAC = 0x07

SCP_IDENTIFIER = 0x03
_BLOCK = 16
_ZERO_BLOCK = bytes(_BLOCK)
_MAX_SEQUENCE_COUNTER = 0xFFFFFF
_R_ENC_MARK = 0x80 << 120  # R-ENCRYPTION ICV: the counter block with its first byte set to 80
_LOW_120 = (1 << 120) - 1
# Mode objects are immutable parameters: one of each serves every context (building one validates
# its IV, which costs about as much as a CMAC of a short message).
_CBC_ZERO = modes.CBC(_ZERO_BLOCK)
_ECB = modes.ECB()  # noqa: S305 - a building block only, see _Aes

SW_OK = 0x9000
SW_AUTH_FAILED = 0x6300
SW_WRONG_LENGTH = 0x6700
SW_SECURITY = 0x6982
SW_CONDITIONS = 0x6985
SW_INCORRECT_DATA = 0x6A80
SW_INCORRECT_P1P2 = 0x6A86
SW_INS = 0x6D00
SW_CLA = 0x6E00


class SCP03Error(GPError):
    """A secure-channel failure: bad cryptogram, bad MAC, protocol misuse.

    ``sw`` is the status word a card answers for it (``0x6982`` for MAC failures), or ``None``
    when the failure is detected off-card.
    """

    def __init__(self, message: str, *, sw: int | None = None) -> None:
        super().__init__(message if sw is None else f"{message} (SW {sw:04X})")
        self.sw = sw


# --- primitives ---------------------------------------------------------------------------------


class _Aes:
    """One AES key with the cipher objects reused for every operation on it.

    Creating a ``cryptography`` cipher context costs more than the AES work on an APDU, so every
    context is created once, on first use, and reused: the CMAC context is primed and copied per
    message (the copy carries the expanded key); one ECB encryptor and one ECB decryptor serve
    single blocks and CBC decryption (one ECB pass XORed with the shifted ciphertext).

    CBC encryption with a derived ICV (Amd D §6.2.6, §6.2.7) runs through one long-lived CBC
    encryptor: CBC is ``C_i = E(P_i xor C_{i-1})``, so feeding it ``X xor C_last`` as the first
    block yields ``E(X)`` — the ICV — and the blocks after it are CBC-encrypted under that ICV,
    all in one native call.  ``_chain`` is the context's last output block.  ECB and the chained
    context are building blocks here, never modes applied to data on their own.
    """

    __slots__ = ("_algorithm", "_cmac", "_ecb", "_ecb_dec", "_cbc", "_chain")

    _CBC_LOOP_MAX = 16 * 16  # bytes; above this a native CBC context is cheaper than the loop

    def __init__(self, key: bytes) -> None:
        self._algorithm = algorithms.AES(key)
        self._cmac: Any = None
        self._ecb: Any = None
        self._ecb_dec: Any = None
        self._cbc: Any = None
        self._chain = 0

    def __repr__(self) -> str:
        return "_Aes(<secret>)"

    def cmac_context(self) -> Any:
        """The primed CMAC context (copy it, never update it)."""
        ctx = self._cmac
        if ctx is None:
            ctx = self._cmac = cmac.CMAC(self._algorithm)
        return ctx

    def encrypt_under_icv(self, icv_input: int, data: bytes) -> bytes:
        """CBC-encrypt ``data`` (a multiple of 16 bytes) under ``ICV = E(icv_input)``, one native call.

        ``icv_input`` is the 16-byte block as an integer.  See the class docstring.
        """
        ctx = self._cbc
        if ctx is None:
            ctx = self._cbc = Cipher(self._algorithm, _CBC_ZERO).encryptor()
        out = ctx.update((icv_input ^ self._chain).to_bytes(_BLOCK, "big") + data)
        self._chain = int.from_bytes(out[-_BLOCK:], "big")
        return out[_BLOCK:]

    def decrypt_under_icv(self, icv_input: int, data: bytes) -> bytes:
        """CBC-decrypt ``data`` (a non-empty multiple of 16 bytes) under ``ICV = E(icv_input)``."""
        return self.cbc_decrypt(self._icv(icv_input), data)

    def _icv(self, icv_input: int) -> bytes:
        ctx = self._cbc
        if ctx is None:
            ctx = self._cbc = Cipher(self._algorithm, _CBC_ZERO).encryptor()
        out = ctx.update((icv_input ^ self._chain).to_bytes(_BLOCK, "big"))
        self._chain = int.from_bytes(out, "big")
        return out

    def encrypt_block(self, block: bytes) -> bytes:
        if self._ecb is None:
            self._ecb = Cipher(self._algorithm, _ECB).encryptor()  # noqa: S305 - see class docstring
        return self._ecb.update(block)

    def cbc_encrypt(self, iv: bytes, data: bytes) -> bytes:
        if len(data) > self._CBC_LOOP_MAX:
            enc = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
            return enc.update(data) + enc.finalize()
        out = bytearray()
        chain = int.from_bytes(iv, "big")
        for i in range(0, len(data), _BLOCK):
            block = self.encrypt_block(
                (chain ^ int.from_bytes(data[i : i + _BLOCK], "big")).to_bytes(_BLOCK, "big")
            )
            out += block
            chain = int.from_bytes(block, "big")
        return bytes(out)

    def cbc_decrypt(self, iv: bytes, data: bytes) -> bytes:
        if self._ecb_dec is None:
            self._ecb_dec = Cipher(self._algorithm, _ECB).decryptor()  # noqa: S305 - see class docstring
        decrypted = self._ecb_dec.update(data)
        mask = iv + data[:-_BLOCK]
        return (int.from_bytes(decrypted, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(data), "big")


def _cmac(key: _Aes, message: bytes) -> bytes:
    """Full 16-byte AES-CMAC (NIST SP 800-38B).  Every CMAC of this module goes through here."""
    ctx = (key._cmac or key.cmac_context()).copy()
    ctx.update(message)
    return ctx.finalize()


def _check_key(key: bytes, what: str) -> None:
    if len(key) not in (16, 24, 32):
        raise UsageError(f"{what} must be 16, 24 or 32 bytes, got {len(key)}")


_LABELS: dict[tuple[int, int], tuple[bytes, ...]] = {}


def _derive(key: _Aes, constant: int, context: bytes, bits: int) -> bytes:
    """Amd D §4.1.5: label (11 x 00 || constant) || 00 || L || i || context, PRF = CMAC."""
    prefixes = _LABELS.get((constant, bits))
    if prefixes is None:
        label = bytes(11) + bytes((constant, 0x00)) + bits.to_bytes(2, "big")
        prefixes = tuple(label + bytes((i,)) for i in range(1, (bits + 127) // 128 + 1))
        _LABELS[(constant, bits)] = prefixes
    if len(prefixes) == 1:
        return _cmac(key, prefixes[0] + context)[: bits // 8]
    return b"".join([_cmac(key, prefix + context) for prefix in prefixes])[: bits // 8]


def kdf(key: bytes, constant: int, context: bytes, bits: int) -> bytes:
    """The SCP03 data derivation scheme (Amd D §4.1.5) producing ``bits`` bits (64..256)."""
    _check_key(key, "KDF key")
    if bits not in (64, 128, 192, 256):
        raise UsageError(f"L must be 64, 128, 192 or 256 bits, got {bits}")
    if not 0 <= constant <= 0xFF:
        raise UsageError("derivation constant must be one byte")
    return _derive(_Aes(key), constant, context, bits)


def pseudo_random_card_challenge(
    enc_key: bytes, sequence_counter: int, aid: bytes, *, s16: bool = False
) -> bytes:
    """Amd D §6.2.2.1: KDF(Key-ENC, '02', sequence counter (3 bytes) || AID, 64 or 128 bits)."""
    _check_key(enc_key, "Key-ENC")
    if not 0 <= sequence_counter <= _MAX_SEQUENCE_COUNTER:
        raise UsageError("sequence counter must fit in 3 bytes")
    if not 5 <= len(aid) <= 16:
        raise UsageError(f"AID must be 5 to 16 bytes, got {len(aid)}")
    context = sequence_counter.to_bytes(3, "big") + aid
    return _derive(_Aes(enc_key), DC_CARD_CHALLENGE, context, 128 if s16 else 64)


def kcv(key: bytes) -> bytes:
    """AES key check value: the first 3 bytes of AES-ECB(key, 16 x '01') (GPCS §11.8.2.3)."""
    _check_key(key, "key")
    return _Aes(key).encrypt_block(b"\x01" * _BLOCK)[:3]


def encrypt_dek(dek: bytes, data: bytes) -> bytes:
    """Sensitive data encryption with the static Key-DEK: AES-CBC, zero ICV (Amd D §6.2.8)."""
    _check_key(dek, "Key-DEK")
    if not data or len(data) % _BLOCK:
        raise UsageError(f"sensitive data must be a non-empty multiple of 16 bytes, got {len(data)}")
    return _Aes(dek).cbc_encrypt(_ZERO_BLOCK, bytes(data))


def decrypt_dek(dek: bytes, data: bytes) -> bytes:
    """Inverse of :func:`encrypt_dek`; bad lengths from the wire raise :class:`SCP03Error` (6A80)."""
    _check_key(dek, "Key-DEK")
    if not data or len(data) % _BLOCK:
        raise SCP03Error(
            f"encrypted data must be a non-empty multiple of 16 bytes, got {len(data)}", sw=SW_INCORRECT_DATA
        )
    return _Aes(dek).cbc_decrypt(_ZERO_BLOCK, bytes(data))


def encrypt_key_component(dek: bytes, key: bytes, *, padding: bytes | None = None) -> bytes:
    """A PUT KEY key component under Key-DEK (Amd D §6.2.8).

    16- and 32-byte keys are encrypted as they are; other lengths are padded to the next block
    with ``padding`` (random by default: the spec asks for "arbitrary bytes").  The caller adds
    the clear length prefix of GPCS Table 11-70 when padding was needed.
    """
    pad_len = -len(key) % _BLOCK
    if padding is None:
        padding = os.urandom(pad_len)
    if len(padding) != pad_len:
        raise UsageError(f"key of {len(key)} bytes needs {pad_len} padding bytes")
    return encrypt_dek(dek, bytes(key) + padding)


def _pad(data: bytes) -> bytes:
    """GPCS B.2.3: append '80' then '00' up to a multiple of 16 (always at least one byte)."""
    return data + b"\x80" + bytes(-(len(data) + 1) % _BLOCK)


def _unpad(data: bytes, *, strict: bool) -> bytes | None:
    """Inverse of :func:`_pad`, ``None`` when the padding is malformed.

    ``strict`` also rejects padding longer than one block (GPCS B.2.3 pads to the *next*
    multiple of 16).  The host reads leniently because a published card emulator (Samsung
    OpenSCP-Java test data) pads an 11-byte response to 32 bytes; both readings run only after
    the MAC has been verified, so leniency gives no padding oracle.
    """
    end = len(data.rstrip(b"\x00"))
    if end == 0 or data[end - 1] != 0x80 or (strict and len(data) - end >= _BLOCK):
        return None
    return data[: end - 1]


# --- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class StaticKeys:
    """One SCP03 key set: Key-ENC, Key-MAC and Key-DEK, all of the same length (Amd D §6.1)."""

    enc: bytes
    mac: bytes
    dek: bytes
    _ciphers: tuple[_Aes, _Aes] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("enc", "mac", "dek"):
            value = getattr(self, name)
            if not isinstance(value, bytes | bytearray):
                raise UsageError(f"Key-{name.upper()} must be bytes")
            _check_key(bytes(value), f"Key-{name.upper()}")
            object.__setattr__(self, name, bytes(value))
        if not len(self.enc) == len(self.mac) == len(self.dek):
            raise UsageError("Key-ENC, Key-MAC and Key-DEK must have the same length (Amd D §6.1)")
        # Cipher objects for Key-ENC and Key-MAC, built once per key set and shared by its sessions.
        object.__setattr__(self, "_ciphers", (_Aes(self.enc), _Aes(self.mac)))

    @property
    def key_length(self) -> int:
        return len(self.enc)

    def __repr__(self) -> str:
        return (
            f"StaticKeys(AES-{8 * self.key_length}, kcv enc={kcv(self.enc).hex().upper()} "
            f"mac={kcv(self.mac).hex().upper()} dek={kcv(self.dek).hex().upper()})"
        )


@dataclass(frozen=True, repr=False)
class SessionKeys:
    """S-ENC, S-MAC and S-RMAC of one secure channel session (Amd D §6.2.1)."""

    s_enc: bytes
    s_mac: bytes
    s_rmac: bytes
    _ciphers: tuple[_Aes, _Aes, _Aes] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ciphers", (_Aes(self.s_enc), _Aes(self.s_mac), _Aes(self.s_rmac)))

    def __repr__(self) -> str:
        return (
            f"SessionKeys(AES-{8 * len(self.s_enc)}, kcv s_enc={kcv(self.s_enc).hex().upper()} "
            f"s_mac={kcv(self.s_mac).hex().upper()} s_rmac={kcv(self.s_rmac).hex().upper()})"
        )


# --- the shared channel state -------------------------------------------------------------------


class _Channel:
    """State and cryptography common to both ends of one session.

    Invariants once authenticated: ``_mcv`` is the full 16-byte CMAC of the last C-MAC'd command
    (16 x 00 before EXTERNAL AUTHENTICATE); ``_counter`` is the encryption counter of the last
    command, 0 right after EXTERNAL AUTHENTICATE.
    """

    _static: StaticKeys
    _keys: SessionKeys
    _enc: _Aes
    _mac: _Aes
    _rmac: _Aes

    def __init__(self, static: StaticKeys, *, host_challenge: bytes) -> None:
        if not isinstance(static, StaticKeys):
            raise UsageError("keys must be a StaticKeys")
        if len(host_challenge) not in (8, 16):
            raise UsageError(f"host challenge must be 8 (S8) or 16 (S16) bytes, got {len(host_challenge)}")
        self._static = static
        self._host_challenge = bytes(host_challenge)
        self._n = len(host_challenge)  # challenge, cryptogram and MAC length: 8 (S8) or 16 (S16)
        self._level = NO_SECURITY
        self._authenticated = False
        self._mcv = _ZERO_BLOCK
        self._counter = 0
        self._card_challenge = b""
        self._i_param = 0
        self._key_version = 0
        self._sequence_counter: int | None = None
        self._last_command_secured = False
        self._session_key_values: tuple[bytes, bytes, bytes] | None = None

    # -- derivation --

    def _start(self, card_challenge: bytes) -> None:
        """Derive the session keys for host challenge || card challenge (Amd D §6.2.1)."""
        self._card_challenge = card_challenge
        context = self._host_challenge + card_challenge
        bits = 8 * self._static.key_length
        static_enc, static_mac = self._static._ciphers
        s_enc = _derive(static_enc, DC_S_ENC, context, bits)
        s_mac = _derive(static_mac, DC_S_MAC, context, bits)
        s_rmac = _derive(static_mac, DC_S_RMAC, context, bits)
        self._session_key_values = (s_enc, s_mac, s_rmac)  # SessionKeys is built on demand
        self._enc, self._mac, self._rmac = _Aes(s_enc), _Aes(s_mac), _Aes(s_rmac)

    def _cryptogram(self, constant: int) -> bytes:
        context = self._host_challenge + self._card_challenge
        return _derive(self._mac, constant, context, 8 * self._n)

    # -- per-message operations --

    def _c_mac(self, cla: int, ins: int, p1: int, p2: int, lc_field: bytes, data: bytes) -> bytes:
        """Full CMAC over MCV || CLA' INS P1 P2 Lc' || data (Amd D §6.2.4)."""
        return _cmac(self._mac, self._mcv + bytes((mac_class_byte(cla), ins, p1, p2)) + lc_field + data)

    def _response_icv_input(self) -> int:
        """The counter block with its first byte set to ``80`` (Amd D §6.2.7), as an integer."""
        return _R_ENC_MARK | (self._counter & _LOW_120)

    @property
    def _rmac_active(self) -> bool:
        return self._authenticated and self._last_command_secured and bool(self._level & R_MAC)

    # -- read-only views --

    @property
    def security_level(self) -> int:
        """The Current Security Level bits (0 when no session is authenticated)."""
        return self._level if self._authenticated else NO_SECURITY

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def s16(self) -> bool:
        """True in S16 mode (16-byte challenges, cryptograms and MACs)."""
        return self._n == 16

    @property
    def host_challenge(self) -> bytes:
        return self._host_challenge

    @property
    def card_challenge(self) -> bytes:
        return self._card_challenge

    @property
    def i_param(self) -> int:
        return self._i_param

    @property
    def key_version(self) -> int:
        return self._key_version

    @property
    def sequence_counter(self) -> int | None:
        """The 3-byte sequence counter of a pseudo-random challenge session, else ``None``."""
        return self._sequence_counter

    @property
    def session_keys(self) -> SessionKeys | None:
        keys = getattr(self, "_keys", None)
        if keys is None and self._session_key_values is not None:
            keys = self._keys = SessionKeys(*self._session_key_values)
        return keys

    @property
    def mac_chaining_value(self) -> bytes:
        return self._mcv

    @property
    def encryption_counter(self) -> int:
        return self._counter

    def __repr__(self) -> str:
        mode = "S16" if self.s16 else "S8"
        return (
            f"{type(self).__name__}({mode}, kvn={self._key_version:#04x}, i={self._i_param:#04x}, "
            f"level={self.security_level:#04x}, authenticated={self._authenticated}, counter={self._counter})"
        )


def _check_level(level: int) -> None:
    if level not in VALID_SECURITY_LEVELS:
        raise UsageError(
            f"security level {level:#04x} is not one of 00, 01, 03, 11, 13, 33 (Amd D Table 7-6)"
        )


def _i_supports(i_param: int, level: int) -> bool:
    if level & R_MAC and not i_param & I_R_MAC:
        return False
    return not (level & R_ENCRYPTION and not i_param & I_R_ENCRYPTION)


# --- off-card entity ----------------------------------------------------------------------------


class HostSession(_Channel):
    """The off-card side of one SCP03 session.

    Use: ``initialize_update()`` → send → ``external_authenticate(response data)`` → send (expect
    9000) → then ``wrap`` every command and ``unwrap`` every response.  An 8-byte host challenge
    selects S8 mode, a 16-byte one S16 mode.
    """

    def __init__(
        self, keys: StaticKeys, *, security_level: int, host_challenge: bytes, key_version: int = 0
    ) -> None:
        super().__init__(keys, host_challenge=host_challenge)
        _check_level(security_level)
        if not 0 <= key_version <= 0xFF:
            raise UsageError("key version must be one byte")
        self._level = security_level
        self._requested_key_version = key_version
        self._key_version = key_version
        self._diversification_data = b""
        self._ext_auth_sent = False

    @property
    def diversification_data(self) -> bytes:
        return self._diversification_data

    def initialize_update(self) -> bytes:
        """INITIALIZE UPDATE: ``80 50 KVN 00 Lc host-challenge 00`` (Amd D Table 7-2)."""
        return CommandAPDU(
            0x80, 0x50, self._requested_key_version, 0x00, self._host_challenge, le=256
        ).encode()

    def external_authenticate(self, response_data: bytes) -> bytes:
        """Check the INITIALIZE UPDATE response and build the EXTERNAL AUTHENTICATE command.

        1. Split the response (Amd D Table 7-3) and check key information against the request.
        2. Derive the session keys and compare the card cryptogram (constant time).
        3. Compute the host cryptogram and C-MAC it with a zero MAC chaining value (§6.2.3).
        The session counts as authenticated from here on; a card answering other than 9000 ends it.
        """
        if self._ext_auth_sent:
            raise SCP03Error("EXTERNAL AUTHENTICATE was already built for this session; start a new one")
        data = bytes(response_data)
        n = self._n
        if len(data) not in (13 + 2 * n, 16 + 2 * n):
            raise SCP03Error(
                f"INITIALIZE UPDATE response has {len(data)} bytes, expected {13 + 2 * n} or {16 + 2 * n} "
                f"for {'S16' if self.s16 else 'S8'} mode"
            )
        kvn, scp, i_param = data[10], data[11], data[12]
        if scp != SCP_IDENTIFIER:
            raise SCP03Error(f"card answered for SCP{scp:02X}, not SCP03")
        if self._requested_key_version and kvn != self._requested_key_version:
            raise SCP03Error(
                f"card used key version {kvn:#04x}, {self._requested_key_version:#04x} was requested"
            )
        if bool(i_param & I_S16) != self.s16:
            raise SCP03Error(
                f"i parameter {i_param:#04x} does not match the {'S16' if self.s16 else 'S8'} host challenge"
            )
        pseudo = bool(i_param & I_PSEUDO_RANDOM)
        if len(data) != 13 + 2 * n + (3 if pseudo else 0):
            raise SCP03Error(f"sequence counter presence does not match i parameter {i_param:#04x}")
        if not _i_supports(i_param, self._level):
            raise SCP03Error(f"card (i={i_param:#04x}) does not support security level {self._level:#04x}")
        self._diversification_data = data[:10]
        self._key_version = kvn
        self._i_param = i_param
        card_challenge = data[13 : 13 + n]
        card_cryptogram = data[13 + n : 13 + 2 * n]
        self._sequence_counter = int.from_bytes(data[13 + 2 * n :], "big") if pseudo else None

        self._start(card_challenge)
        if not hmac.compare_digest(self._cryptogram(DC_CARD_CRYPTOGRAM), card_cryptogram):
            raise SCP03Error("card cryptogram does not match: wrong static keys, or not the expected card")
        host_cryptogram = self._cryptogram(DC_HOST_CRYPTOGRAM)
        self._ext_auth_sent = True
        self._authenticated = True
        return self._mac_command(CommandAPDU(0x84, 0x82, self._level, 0x00, host_cryptogram))

    def _mac_command(self, cmd: CommandAPDU) -> bytes:
        """Append the C-MAC to a command whose data is final (already encrypted, if at all)."""
        length = len(cmd.data) + self._n
        if length > 0xFFFF:
            raise UsageError("command data too long to carry a C-MAC")
        extended = cmd.extended or length > 255 or (cmd.le is not None and cmd.le > 256)
        lc_field = b"\x00" + length.to_bytes(2, "big") if extended else bytes((length,))
        full = self._c_mac(cmd.cla, cmd.ins, cmd.p1, cmd.p2, lc_field, cmd.data)
        self._mcv = full
        cla = _cla_for(cmd.cla, channel=cmd.channel, sm=True)
        return CommandAPDU(
            cla, cmd.ins, cmd.p1, cmd.p2, cmd.data + full[: self._n], cmd.le, extended
        ).encode()

    def wrap(self, apdu: bytes) -> bytes:
        """Protect one command per the security level (Amd D §6.2.4, §6.2.6)."""
        if not self._authenticated:
            raise SCP03Error("no authenticated session: run INITIALIZE UPDATE / EXTERNAL AUTHENTICATE first")
        raw = bytes(apdu)
        split = split_short(raw)
        level = self._level
        # Fast path: a short command with a channel-coded, SM-free CLA at a C-MAC level.  Byte for
        # byte what the general path below builds; anything else takes the general path.
        if split is not None and level & C_MAC:
            cla = raw[0]
            sm_cla = SM_CLA[cla]
            if sm_cla >= 0 and PLAIN_CLA[cla] == cla:
                data, le_field = split
                self._counter += 1
                if level & C_DECRYPTION and data:
                    data = self._enc.encrypt_under_icv(self._counter, _pad(data))
                self._last_command_secured = True
                n = self._n
                length = len(data) + n
                if length <= 255:
                    header = bytes((sm_cla, raw[1], raw[2], raw[3], length))
                    full = _cmac(self._mac, self._mcv + bytes((MAC_CLA[cla],)) + header[1:] + data)
                    self._mcv = full
                    return header + data + full[:n] + le_field
                le = (le_field[0] or 256) if le_field else None
                return self._mac_command(CommandAPDU(cla, raw[1], raw[2], raw[3], data, le, False))
        return self._wrap_general(raw)

    def _wrap_general(self, apdu: bytes) -> bytes:
        cmd = CommandAPDU.parse(apdu)
        self._counter += 1  # every command, with or without data (Amd D §6.2.6)
        if not self._level & C_MAC:
            self._last_command_secured = False
            return cmd.encode()
        if cmd.secure_messaging:
            raise UsageError("command already indicates secure messaging in CLA; pass the plain command")
        data = cmd.data
        if self._level & C_DECRYPTION and data:
            data = self._enc.encrypt_under_icv(self._counter, _pad(data))
        self._last_command_secured = True
        return self._mac_command(CommandAPDU(cmd.cla, cmd.ins, cmd.p1, cmd.p2, data, cmd.le, cmd.extended))

    def unwrap(self, response: bytes) -> bytes:
        """Verify R-MAC and decrypt R-ENC data (Amd D §6.2.5, §6.2.7); returns plain data + SW."""
        raw = bytes(response)
        if not 2 <= len(raw) <= 65538:
            ResponseAPDU.parse(raw)  # raises the ParseError naming the problem
        sw_bytes = raw[-2:]
        sw = int.from_bytes(sw_bytes, "big")
        if not (self._authenticated and self._last_command_secured and self._level & R_MAC) or not (
            sw == 0x9000 or sw >> 8 in (0x62, 0x63)  # is_success_or_warning
        ):
            return raw  # error status words carry no protection
        n = self._n
        data = raw[:-2]
        if len(data) < n:
            raise SCP03Error(f"response of {len(data)} data bytes cannot carry a {n}-byte R-MAC")
        body, mac = data[:-n], data[-n:]
        expected = _cmac(self._rmac, self._mcv + body + sw_bytes)[:n]
        if not hmac.compare_digest(expected, mac):
            raise SCP03Error("R-MAC verification failed: the response was altered or is out of sequence")
        if self._level & R_ENCRYPTION and body:
            if len(body) % _BLOCK:
                raise SCP03Error("encrypted response data is not a multiple of 16 bytes")
            plain = _unpad(self._enc.decrypt_under_icv(self._response_icv_input(), body), strict=False)
            if plain is None:
                raise SCP03Error("decrypted response data has malformed padding")
            body = plain
        return body + sw_bytes


# --- card ---------------------------------------------------------------------------------------


class CardSession(_Channel):
    """The card (Security Domain) side of one SCP03 session, for the software secure element.

    ``begin`` answers INITIALIZE UPDATE; ``external_authenticate`` answers EXTERNAL AUTHENTICATE;
    then ``unwrap_command`` / ``wrap_response`` around every command of the session.  After a
    security error the session is *aborted* (Amd D §5.6): every further command is rejected with
    6982 until the caller starts a new session (new INITIALIZE UPDATE, SELECT, channel close).
    """

    def __init__(self, keys: StaticKeys, *, host_challenge: bytes) -> None:
        super().__init__(keys, host_challenge=host_challenge)
        self._aid = b""
        self._state = "initialized"  # -> "open" | "aborted"

    @classmethod
    def begin(
        cls,
        keys: StaticKeys,
        *,
        host_challenge: bytes,
        key_version: int,
        i_param: int,
        sequence_counter: int,
        aid: bytes,
        card_challenge: bytes | None = None,
        diversification_data: bytes = bytes(10),
    ) -> tuple[CardSession, bytes]:
        """Process INITIALIZE UPDATE; returns the session and the response data (no SW).

        ``sequence_counter`` is the value to use *now*: the caller increments and persists the key
        set's counter before calling (Amd D §6.2.2.1).  It is only used, and only returned, when
        ``i_param`` selects pseudo-random challenges.  ``key_version`` is the KVN actually used
        (the caller resolves P1 = 00 to a key set).  A host challenge whose length does not match
        the S8/S16 mode of ``i_param`` raises :class:`SCP03Error` with ``sw`` 6700; an exhausted
        sequence counter raises it with 6985.
        """
        if (
            not 0 <= i_param <= 0xFF
            or i_param & _I_RESERVED
            or (i_param & I_R_ENCRYPTION and not i_param & I_R_MAC)
        ):
            raise UsageError(
                f"i parameter {i_param:#04x} is not a valid SCP03 configuration (Amd D Table 5-1)"
            )
        if not 0 <= key_version <= 0xFF:
            raise UsageError("key version must be one byte")
        if len(diversification_data) != 10:
            raise UsageError("key diversification data must be 10 bytes")
        if not 5 <= len(aid) <= 16:
            raise UsageError(f"AID must be 5 to 16 bytes, got {len(aid)}")
        n = 16 if i_param & I_S16 else 8
        if len(host_challenge) != n:
            raise SCP03Error(f"host challenge must be {n} bytes in this mode", sw=SW_WRONG_LENGTH)
        session = cls(keys, host_challenge=host_challenge)
        session._i_param = i_param
        session._key_version = key_version
        session._aid = bytes(aid)
        trailer = b""
        if i_param & I_PSEUDO_RANDOM:
            if card_challenge is not None:
                raise UsageError("a pseudo-random card challenge is computed, not given")
            if not 0 <= sequence_counter <= _MAX_SEQUENCE_COUNTER:
                raise SCP03Error("sequence counter exhausted", sw=SW_CONDITIONS)
            session._sequence_counter = sequence_counter
            trailer = sequence_counter.to_bytes(3, "big")
            context = trailer + session._aid
            card_challenge = _derive(keys._ciphers[0], DC_CARD_CHALLENGE, context, 8 * n)
        elif card_challenge is None:
            card_challenge = os.urandom(n)
        elif len(card_challenge) != n:
            raise UsageError(f"card challenge must be {n} bytes in this mode")
        session._start(bytes(card_challenge))
        data = (
            bytes(diversification_data)
            + bytes((key_version, SCP_IDENTIFIER, i_param))
            + session._card_challenge
            + session._cryptogram(DC_CARD_CRYPTOGRAM)
            + trailer
        )
        return session, data

    @property
    def aid(self) -> bytes:
        return self._aid

    @property
    def aborted(self) -> bool:
        return self._state == "aborted"

    def _abort(self) -> None:
        self._state = "aborted"
        self._authenticated = False
        self._level = NO_SECURITY
        self._last_command_secured = False

    def external_authenticate(self, apdu: bytes) -> int:
        """Verify EXTERNAL AUTHENTICATE (Amd D §7.1.2); returns the status word to answer.

        9000 opens the session at level P1.  6300: host cryptogram wrong; 6982: C-MAC wrong;
        6A86: P1 not a valid level (or one the i parameter does not support) or P2 not 00;
        6700: wrong Lc; 6E00 / 6D00: not a GP secure-messaging class / not INS 82; 6985: no
        INITIALIZE UPDATE precedes it.  Any answer but 9000 ends the attempt (§5.2: restart).
        """
        if self._state != "initialized":
            return SW_CONDITIONS
        sw = self._check_external_authenticate(apdu)
        if sw != SW_OK:
            self._abort()
        return sw

    def _check_external_authenticate(self, apdu: bytes) -> int:
        try:
            cmd = CommandAPDU.parse(apdu)
        except GPError:
            return SW_WRONG_LENGTH
        if cmd.ins != 0x82:
            return SW_INS
        if not (cmd.is_proprietary and cmd.secure_messaging):
            return SW_CLA
        if cmd.p1 not in VALID_SECURITY_LEVELS or cmd.p2 != 0 or not _i_supports(self._i_param, cmd.p1):
            return SW_INCORRECT_P1P2
        n = self._n
        if len(cmd.data) != 2 * n:
            return SW_WRONG_LENGTH
        host_cryptogram, mac = cmd.data[:n], cmd.data[n:]
        if not hmac.compare_digest(self._cryptogram(DC_HOST_CRYPTOGRAM), host_cryptogram):
            return SW_AUTH_FAILED
        full = self._c_mac(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.lc_field(), host_cryptogram)
        if not hmac.compare_digest(full[:n], mac):
            return SW_SECURITY
        self._mcv = full
        self._counter = 0
        self._level = cmd.p1
        self._authenticated = True
        self._last_command_secured = False  # no R-MAC on the EXTERNAL AUTHENTICATE response
        self._state = "open"
        return SW_OK

    def _security_error(self, message: str) -> SCP03Error:
        self._abort()
        return SCP03Error(message, sw=SW_SECURITY)

    def unwrap_command(self, apdu: bytes) -> bytes:
        """Check one command against the Current Security Level and return it in plain form.

        1. Aborted session: reject (Amd D §5.6).  No session: pass plain commands through,
           reject secured ones (nothing to verify them with).
        2. Increment the encryption counter (every command, §6.2.6).
        3. Level 00: pass plain commands through; a secured one is a security error.
        4. Verify the C-MAC (§6.2.4); on success it becomes the MAC chaining value, whatever the
           command's outcome will be.
        5. With C-DECRYPTION, decrypt and strip the padding (§6.2.6).
        Security errors abort the session and raise :class:`SCP03Error` with ``sw`` 6982.
        A malformed APDU raises :class:`gp.errors.ParseError` and leaves the session untouched.
        """
        return self._unwrap(CommandAPDU.parse(apdu)).encode()

    def _unwrap(self, cmd: CommandAPDU) -> CommandAPDU:
        """:meth:`unwrap_command` on a parsed command, returning the plain command (card hot path)."""
        if self._state == "aborted":
            raise SCP03Error("secure channel session aborted; start a new one", sw=SW_SECURITY)
        if not self._authenticated:
            if cmd.secure_messaging:
                raise SCP03Error("secured command outside a secure channel session", sw=SW_SECURITY)
            self._last_command_secured = False
            return cmd
        self._counter += 1
        if not self._level & C_MAC:
            if cmd.secure_messaging:
                raise self._security_error("secured command in a session without secure messaging")
            self._last_command_secured = False
            return cmd
        n = self._n
        data = cmd.data
        if not cmd.secure_messaging or len(data) < n:
            raise self._security_error("command lacks the C-MAC the security level requires")
        body, mac = data[:-n], data[-n:]
        # MAC_CLA is mac_class_byte(); a secure-messaging CLA always has a channel coding.
        if cmd.extended or len(data) > 255 or (cmd.le is not None and cmd.le > 256):
            lc_field = cmd.lc_field()
        else:
            lc_field = bytes((len(data),))
        full = _cmac(
            self._mac, self._mcv + bytes((MAC_CLA[cmd.cla], cmd.ins, cmd.p1, cmd.p2)) + lc_field + body
        )
        if not hmac.compare_digest(full[:n], mac):
            raise self._security_error("C-MAC verification failed")
        self._mcv = full
        self._last_command_secured = True
        if self._level & C_DECRYPTION and body:
            if len(body) % _BLOCK:
                raise self._security_error("encrypted command data is not a multiple of 16 bytes")
            plain = _unpad(self._enc.decrypt_under_icv(self._counter, body), strict=True)
            if plain is None:
                raise self._security_error("decrypted command data has malformed padding")
            body = plain
        # A plain copy: the fields come from a checked APDU and the body is shorter than its data.
        return CommandAPDU._trusted(PLAIN_CLA[cmd.cla], cmd.ins, cmd.p1, cmd.p2, body, cmd.le, False)

    def wrap_response(self, data: bytes, sw: int) -> bytes:
        """The full response APDU for the last unwrapped command (Amd D §6.2.5, §6.2.7).

        With R-MAC in force, 9000 / 62xx / 63xx get R-ENC (if the level asks and there is data)
        and the R-MAC; any other status word is returned bare, without data.
        """
        if not 0 <= sw <= 0xFFFF:
            raise UsageError("status word must be 16 bits")
        data = bytes(data)
        sw_bytes = sw.to_bytes(2, "big")
        if not self._rmac_active:
            return data + sw_bytes
        if not is_success_or_warning(sw):
            return sw_bytes
        if self._level & R_ENCRYPTION and data:
            data = self._enc.encrypt_under_icv(self._response_icv_input(), _pad(data))
        return data + _cmac(self._rmac, self._mcv + data + sw_bytes)[: self._n] + sw_bytes

    def decrypt_sensitive(self, data: bytes) -> bytes:
        """Decrypt key components sent under the static Key-DEK (Amd D §6.2.8)."""
        return decrypt_dek(self._static.dek, data)
