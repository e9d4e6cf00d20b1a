"""PUT KEY and DELETE.

- PUT KEY: GP CS v2.3.1 §11.8 — P1 (b8 more commands, b7..b1 KVN to replace, 00 = add a key
  set) and P2 (b8 multiple keys, b7..b1 first KID) in Tables 11-64/11-65; data = new KVN followed
  by key data fields in the basic format of Table 11-68 (``type | L | key component block |
  L | KCV``).  The key component block of a secret key has two legal encodings (§11.8.2.3,
  Tables 11-70 and 11-71; Amendment D v1.2 §7.2.2): ``len(clear key) || ciphertext`` or, when no
  padding was needed, the ciphertext alone.  A card tells them apart by the block length modulo
  the cipher block size, and accepts both.  Response: KVN followed by the KCVs (§11.8.3.1).
  AES KCV = first 3 bytes of AES-ECB(key, 16 × ``01``) (Amendment D v1.2 §7.2.2).
- DELETE: GP CS v2.3.1 §11.2 — P2 ``00`` object / ``80`` object and related objects; data
  ``4F`` AID (+ ``B6`` CRT, ``9E`` delete token) or ``D0`` KID / ``D2`` KVN (Tables 11-22..11-24);
  response ``00`` or a confirmation (Table 11-25).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from gp import tlv
from gp.apdu import CommandAPDU
from gp.commands._codec import Reader, expect_ins, gp_apdu, lv
from gp.commands.types import AID, Ins, KeyType
from gp.errors import EncodeError, GPError, ParseError

__all__ = [
    "ClearKey",
    "DeleteKey",
    "DeleteObject",
    "KeyCheckError",
    "PutKey",
    "PutKeyResponse",
    "parse_delete",
]

_SECRET_TYPES = frozenset(
    {KeyType.DES, KeyType.AES, KeyType.TLS_PSK, KeyType.HMAC_SHA1, KeyType.HMAC_SHA1_160}
)
_BLOCK = 16


class KeyCheckError(GPError):
    """A key check value does not match the key it came with (the card answers ``6982``)."""


def aes_kcv(key: bytes) -> bytes:
    from gp.scp03 import kcv

    return kcv(key)


@dataclass(frozen=True, slots=True)
class ClearKey:
    """One key in clear, as the card stores it after decrypting a key component block."""

    key_type: KeyType
    value: bytes

    def __repr__(self) -> str:  # never print key material
        return f"ClearKey({self.key_type.name}, {len(self.value)} bytes)"

    def kcv(self) -> bytes:
        if self.key_type is KeyType.AES:
            return aes_kcv(self.value)
        return b""


@dataclass(frozen=True, slots=True)
class PutKey:
    """PUT KEY for a key set: ``replace_version`` 0 adds ``new_version``, otherwise that set is replaced."""

    new_version: int
    keys: tuple[ClearKey, ...]
    replace_version: int = 0
    first_kid: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.new_version <= 0x7F and self.new_version != 0xFF:
            raise EncodeError(f"key version {self.new_version} outside 01..7F")
        if not 0 <= self.replace_version <= 0x7F:
            raise EncodeError(f"key version to replace {self.replace_version} outside 00..7F")
        if not 1 <= self.first_kid <= 0x7F:
            raise EncodeError(f"key identifier {self.first_kid} outside 01..7F")
        if not self.keys:
            raise EncodeError("PUT KEY needs at least one key")

    def data(
        self,
        *,
        dek: bytes,
        length_prefixed: bool = True,
        encrypt: Callable[[bytes, bytes], bytes] | None = None,
    ) -> bytes:
        """The command data; ``length_prefixed`` picks Table 11-70 (``88 11 10 ..``) over 11-71 (``88 10 ..``)."""
        if encrypt is None:
            from gp.scp03 import encrypt_dek as encrypt
        out = bytes([self.new_version])
        for key in self.keys:
            if key.key_type in _SECRET_TYPES:
                clear = key.value
                padded = clear
                if len(clear) % _BLOCK:
                    padded = clear + os.urandom(_BLOCK - len(clear) % _BLOCK)
                cipher = encrypt(dek, padded)
                if len(padded) != len(clear) and not length_prefixed:
                    raise EncodeError("a padded key needs the length-prefixed component block")
                block = (bytes([len(clear)]) + cipher) if length_prefixed else cipher
            else:
                block = key.value
            out += bytes([key.key_type]) + lv(block) + lv(key.kcv())
        return out

    def to_apdu(
        self,
        *,
        dek: bytes,
        length_prefixed: bool = True,
        more: bool = False,
        cla: int = 0x80,
        encrypt: Callable[[bytes, bytes], bytes] | None = None,
    ) -> CommandAPDU:
        p1 = (0x80 if more else 0) | self.replace_version
        p2 = (0x80 if len(self.keys) > 1 else 0) | self.first_kid
        return gp_apdu(
            Ins.PUT_KEY,
            p1,
            p2,
            self.data(dek=dek, length_prefixed=length_prefixed, encrypt=encrypt),
            le=256,
            cla=cla,
        )

    @classmethod
    def from_apdu(cls, apdu: CommandAPDU, *, decrypt: Callable[[bytes], bytes]) -> PutKey:
        """Parse and decrypt; ``decrypt`` undoes the DEK encryption of one component block.

        Raises :class:`ParseError` (``6A80``) for malformed data and unsupported key types,
        :class:`KeyCheckError` (``6982``) when a KCV does not match.
        """
        expect_ins(apdu, Ins.PUT_KEY, "PUT KEY")
        replace_version = apdu.p1 & 0x7F
        multiple = bool(apdu.p2 & 0x80)
        first_kid = apdu.p2 & 0x7F
        if first_kid == 0:
            raise ParseError("PUT KEY P2 names key identifier 00", offset=3)
        r = Reader(apdu.data)
        new_version = r.byte("new key version number")
        if not 1 <= new_version <= 0x7F:
            raise ParseError(f"new key version {new_version:02X} outside 01..7F", offset=5)
        keys: list[ClearKey] = []
        while not r.at_end():
            at = r.offset
            raw_type = r.byte("key type")
            try:
                key_type = KeyType(raw_type)
            except ValueError:
                raise ParseError(f"unknown key type {raw_type:02X}", offset=at) from None
            if key_type is KeyType.EXTENDED_FORMAT:
                raise ParseError("extended key format (FF) is not supported", offset=at)
            block_at = r.offset + 1
            block = r.lv("key component block")
            kcv = r.lv("key check value")
            if key_type in _SECRET_TYPES:
                value = _decrypt_block(block, decrypt, key_type, block_at)
            else:
                value = block
            key = ClearKey(key_type, value)
            if kcv and key_type is KeyType.AES and kcv != key.kcv()[: len(kcv)]:
                raise KeyCheckError(f"key check value of key {first_kid + len(keys)} does not match")
            keys.append(key)
        if not keys:
            raise ParseError("PUT KEY without a key data field", offset=6)
        if not multiple and len(keys) > 1:
            raise ParseError("several keys but P2 b8 (multiple keys) is not set", offset=3)
        if first_kid + len(keys) - 1 > 0x7F:
            raise ParseError("key identifiers run past 7F", offset=3)
        return cls(new_version, tuple(keys), replace_version, first_kid)


def _decrypt_block(block: bytes, decrypt: Callable[[bytes], bytes], key_type: KeyType, offset: int) -> bytes:
    n = len(block)
    if n % _BLOCK == 1 and n > 1:
        clear_len, cipher = block[0], block[1:]
    elif n % _BLOCK == 0 and n > 0:
        clear_len, cipher = n, block
    else:
        raise ParseError(f"key component block of {n} bytes fits neither encoding", offset=offset)
    if not 0 < clear_len <= len(cipher):
        raise ParseError(
            f"clear key length {clear_len} exceeds the {len(cipher)} encrypted bytes", offset=offset
        )
    if key_type is KeyType.AES and clear_len not in (16, 24, 32):
        raise ParseError(f"AES key of {clear_len} bytes", offset=offset)
    try:
        clear = decrypt(cipher)
    except GPError as e:
        raise ParseError(f"key component block does not decrypt: {e}", offset=offset) from None
    return clear[:clear_len]


@dataclass(frozen=True, slots=True)
class PutKeyResponse:
    """PUT KEY response: the key version number and one KCV per key (§11.8.3.1)."""

    key_version: int
    kcvs: tuple[bytes, ...]

    def encode(self) -> bytes:
        return bytes([self.key_version]) + b"".join(self.kcvs)

    @classmethod
    def parse(cls, data: bytes, *, kcv_length: int = 3) -> PutKeyResponse:
        body = data[1:]
        if not data or (len(body) % kcv_length if kcv_length else body):
            raise ParseError(f"PUT KEY response of {len(data)} bytes", offset=0)
        kcvs = tuple(body[i : i + kcv_length] for i in range(0, len(body), kcv_length)) if kcv_length else ()
        return cls(data[0], kcvs)


# --- DELETE -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeleteObject:
    """DELETE an application, Security Domain or load file; ``related`` also deletes what depends on it."""

    aid: AID
    related: bool = False
    token: bytes = b""
    control_reference: bytes | None = None  # raw value of the B6 CRT, if any

    def body(self) -> bytes:
        out = tlv.encode(0x4F, self.aid)
        if self.control_reference is not None:
            out += tlv.encode(0xB6, self.control_reference)
        return out

    def token_data(self) -> bytes:
        body = self.body()
        return bytes([0x00, 0x80 if self.related else 0x00, len(body)]) + body

    def to_apdu(self, *, cla: int = 0x80) -> CommandAPDU:
        data = self.body() + (tlv.encode(0x9E, self.token) if self.token else b"")
        return gp_apdu(Ins.DELETE, 0x00, 0x80 if self.related else 0x00, data, le=256, cla=cla)


@dataclass(frozen=True, slots=True)
class DeleteKey:
    """DELETE keys by key identifier and/or key version number (Table 11-24)."""

    kid: int | None = None
    kvn: int | None = None

    def __post_init__(self) -> None:
        if self.kid is None and self.kvn is None:
            raise EncodeError("delete key needs a KID, a KVN or both")

    def to_apdu(self, *, cla: int = 0x80) -> CommandAPDU:
        data = b""
        if self.kid is not None:
            data += bytes([0xD0, 1, self.kid])
        if self.kvn is not None:
            data += bytes([0xD2, 1, self.kvn])
        return gp_apdu(Ins.DELETE, 0x00, 0x00, data, le=256, cla=cla)


def parse_delete(apdu: CommandAPDU) -> tuple[DeleteObject | DeleteKey, bool]:
    """The typed DELETE and its "more commands" flag (P1 b8)."""
    expect_ins(apdu, Ins.DELETE, "DELETE")
    if apdu.p1 & 0x7F or apdu.p2 not in (0x00, 0x80):
        raise ParseError(f"DELETE P1P2 {apdu.p1:02X}{apdu.p2:02X}", offset=2)
    try:
        items = tlv.parse_all(apdu.data)
    except ParseError as e:
        raise ParseError(f"DELETE data: {e.problem}", offset=5 + e.offset) from None
    tags = [t.tag for t in items]
    if len(set(tags)) != len(tags):
        raise ParseError("DELETE data repeats a tag", offset=5)
    by_tag = {t.tag: t for t in items}
    if 0x4F in by_tag:
        if set(by_tag) - {0x4F, 0xB6, 0x9E}:
            raise ParseError("DELETE of an object with unexpected tags", offset=5)
        aid = by_tag[0x4F].value
        if not 5 <= len(aid) <= 16:
            raise ParseError(f"DELETE AID of {len(aid)} bytes", offset=7)
        crt = by_tag[0xB6].value if 0xB6 in by_tag else None
        token = by_tag[0x9E].value if 0x9E in by_tag else b""
        return DeleteObject(AID(aid), apdu.p2 == 0x80, token, crt), bool(apdu.p1 & 0x80)
    if not by_tag or set(by_tag) - {0xD0, 0xD2}:
        raise ParseError("DELETE needs 4F, or D0 and/or D2", offset=5)
    for t in by_tag.values():
        if len(t.value) != 1:
            raise ParseError(f"DELETE key reference {t.tag:02X} is not one byte", offset=5)
    kid = by_tag[0xD0].value[0] if 0xD0 in by_tag else None
    kvn = by_tag[0xD2].value[0] if 0xD2 in by_tag else None
    if apdu.p2 == 0x80:
        raise ParseError("DELETE key with P2 80", offset=3)
    return DeleteKey(kid, kvn), bool(apdu.p1 & 0x80)
