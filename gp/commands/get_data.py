"""GET DATA and the data objects a TSM reads, GP CS v2.3.1 §11.3 and §H.

- ``66`` Card Data / Card Recognition Data (§H.2, Table H-1): ``73`` with the GP OIDs
  (``2A864886FC6B`` = {iso(1) member-body(2) us(840) globalPlatform(114283)}).
- ``E0`` Key Information Template (§11.3.3.1, Table 11-31): ``C0`` {KID, KVN, (type, length)*}.
- ``C1`` sequence counter of the default key version (§11.3.3.1).
- ``9F7F`` Card Production Life Cycle data (GP CS v2.3.1 §H.6 / GP Systems Profiles): 42 bytes.
- ``42`` Issuer Identification Number and ``45`` Card Image Number (§7.4.1, Table 7-1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

from gp import tlv
from gp.apdu import CommandAPDU
from gp.commands._codec import Reader, expect_ins
from gp.commands.types import Ins, KeyType
from gp.errors import EncodeError, ParseError

__all__ = [
    "CPLC",
    "CardRecognitionData",
    "GetData",
    "KeyInformation",
    "encode_key_information",
    "parse_key_information",
]

TAG_CARD_DATA = 0x66
TAG_KEY_INFORMATION = 0xE0
TAG_SEQUENCE_COUNTER = 0xC1
TAG_CONFIRMATION_COUNTER = 0xC2
TAG_CPLC = 0x9F7F
TAG_IIN = 0x42
TAG_CIN = 0x45

_GP_OID = bytes.fromhex("2A864886FC6B")


@dataclass(frozen=True, slots=True)
class GetData:
    tag: int

    def to_apdu(self, *, cla: int = 0x80) -> CommandAPDU:
        if not 0 <= self.tag <= 0xFFFF:
            raise EncodeError(f"GET DATA tag {self.tag:#x} is not 1 or 2 bytes")
        return CommandAPDU(cla, Ins.GET_DATA, self.tag >> 8, self.tag & 0xFF, le=256)

    @classmethod
    def from_apdu(cls, apdu: CommandAPDU) -> GetData:
        expect_ins(apdu, Ins.GET_DATA, "GET DATA")
        if apdu.data:
            raise ParseError("GET DATA (INS CA) takes no command data", offset=4)
        return cls((apdu.p1 << 8) | apdu.p2)


@dataclass(frozen=True, slots=True)
class CPLC:
    """Card Production Life Cycle data: 42 bytes of fixed-width fields."""

    ic_fabricator: bytes = b"\x00\x00"
    ic_type: bytes = b"\x00\x00"
    os_identifier: bytes = b"\x00\x00"
    os_release_date: bytes = b"\x00\x00"
    os_release_level: bytes = b"\x00\x00"
    ic_fabrication_date: bytes = b"\x00\x00"
    ic_serial_number: bytes = b"\x00\x00\x00\x00"
    ic_batch_identifier: bytes = b"\x00\x00"
    module_fabricator: bytes = b"\x00\x00"
    module_packaging_date: bytes = b"\x00\x00"
    icc_manufacturer: bytes = b"\x00\x00"
    ic_embedding_date: bytes = b"\x00\x00"
    ic_pre_personalizer: bytes = b"\x00\x00"
    ic_pre_personalization_date: bytes = b"\x00\x00"
    ic_pre_personalization_equipment: bytes = b"\x00\x00\x00\x00"
    ic_personalizer: bytes = b"\x00\x00"
    ic_personalization_date: bytes = b"\x00\x00"
    ic_personalization_equipment: bytes = b"\x00\x00\x00\x00"

    LENGTH = 42

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if len(value) != len(f.default):  # type: ignore[arg-type]
                raise EncodeError(f"CPLC {f.name} must be {len(f.default)} bytes")  # type: ignore[arg-type]

    def encode(self) -> bytes:
        return b"".join(getattr(self, f.name) for f in fields(self))

    def encode_tlv(self) -> bytes:
        return tlv.encode(TAG_CPLC, self.encode())

    @classmethod
    def parse(cls, data: bytes) -> CPLC:
        """``9F7F`` TLV or its 42-byte value."""
        if data[:2] == b"\x9f\x7f":
            data = tlv.parse_one(data).value
        if len(data) != cls.LENGTH:
            raise ParseError(f"CPLC of {len(data)} bytes, 42 expected", offset=0)
        r = Reader(data, base=0)
        return cls(**{f.name: r.take(len(f.default), f.name) for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class CardRecognitionData:
    """Card Recognition Data (tag ``66`` → ``73``), with the SCP it announces."""

    gp_version: bytes = b"\x02\x03\x01"
    scp: int = 0x03
    i_param: int = 0x70

    def encode(self) -> bytes:
        try:
            return _encode_card_recognition(self.gp_version, self.scp, self.i_param)
        except TypeError:  # an unhashable gp_version (bytearray): encode without the cache
            return self._encode()

    def _encode(self) -> bytes:
        oid = lambda *parts: tlv.TLV.build(0x06, _GP_OID + bytes(parts))  # noqa: E731
        inner = [
            oid(0x01),
            tlv.TLV.build(0x60, [oid(0x02, *self.gp_version)]),
            tlv.TLV.build(0x63, [oid(0x03)]),
            tlv.TLV.build(0x64, [oid(0x04, self.scp, self.i_param)]),
        ]
        return tlv.encode(TAG_CARD_DATA, [tlv.TLV.build(0x73, inner)])

    @classmethod
    def parse(cls, data: bytes) -> CardRecognitionData:
        top = tlv.parse_one(data)
        scp_tlv = top.find(0x64)
        ver_tlv = top.find(0x60)
        version = b"\x02\x03\x01"
        if (
            ver_tlv is not None
            and ver_tlv.children
            and ver_tlv.children[0].value.startswith(_GP_OID + b"\x02")
        ):
            version = ver_tlv.children[0].value[len(_GP_OID) + 1 :]
        if scp_tlv is None or not scp_tlv.children:
            raise ParseError("card recognition data without SCP information (64)", offset=0)
        value = scp_tlv.children[0].value
        if not value.startswith(_GP_OID + b"\x04") or len(value) != len(_GP_OID) + 3:
            raise ParseError("card recognition data: malformed SCP OID", offset=0)
        return cls(version, value[-2], value[-1])


@functools.lru_cache(maxsize=64)
def _encode_card_recognition(gp_version: bytes, scp: int, i_param: int) -> bytes:
    """Card Recognition Data depends on three values only; SELECT and GET DATA send it often."""
    return CardRecognitionData._encode(CardRecognitionData(gp_version, scp, i_param))


@dataclass(frozen=True, slots=True)
class KeyInformation:
    """One ``C0`` entry of the Key Information Template: KID, KVN and (type, length) components."""

    kid: int
    kvn: int
    components: tuple[tuple[KeyType | int, int], ...]

    def encode(self) -> bytes:
        body = bytes([self.kid, self.kvn])
        for key_type, length in self.components:
            body += bytes([int(key_type), length])
        return tlv.encode(0xC0, body)


def encode_key_information(keys: list[KeyInformation]) -> bytes:
    return tlv.encode(TAG_KEY_INFORMATION, b"".join(k.encode() for k in keys))


def parse_key_information(data: bytes) -> list[KeyInformation]:
    """``E0`` template (or its content) into entries; the extended format (``FF`` types) is kept raw."""
    items = tlv.parse_all(data)
    if len(items) == 1 and items[0].tag == TAG_KEY_INFORMATION:
        items = list(items[0].children)
    out: list[KeyInformation] = []
    for item in items:
        if item.tag != 0xC0 or len(item.value) < 2:
            raise ParseError(f"key information entry tag {item.tag:X}", offset=0)
        v = item.value
        comps: list[tuple[KeyType | int, int]] = []
        for i in range(2, len(v) - 1, 2):
            try:
                kt: KeyType | int = KeyType(v[i])
            except ValueError:
                kt = v[i]
            comps.append((kt, v[i + 1]))
        out.append(KeyInformation(v[0], v[1], tuple(comps)))
    return out
