"""STORE DATA, GP CS v2.3.1 §11.11.

P1 (Table 11-92): b8 last block; b7..b6 encryption (00 none, 01 application dependent, 11 encrypted
with the Key-DEK); b5..b4 structure (00 none, 01 DGI, 10 BER-TLV, 11 RFU); b1 = 1 response data
expected (case 4).  P2 is the block number, 00 for the first block, incremented per command and
reset after the last block.  DGI coding (§11.11.2.2, also EMV CPS): two-byte tag, one-byte length,
or ``FF`` followed by a two-byte length from 255 on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from gp import tlv
from gp.apdu import CommandAPDU
from gp.commands._codec import Reader, expect_ins, gp_apdu
from gp.commands.types import Ins
from gp.errors import EncodeError, ParseError

__all__ = [
    "DGI",
    "DataStructure",
    "Encryption",
    "StoreData",
    "encode_dgis",
    "parse_dgis",
    "store_data_commands",
]


class DataStructure(IntEnum):
    NONE = 0x00
    DGI = 0x08
    BER_TLV = 0x10


class Encryption(IntEnum):
    NONE = 0x00
    APPLICATION_DEPENDENT = 0x20
    ENCRYPTED = 0x60


@dataclass(frozen=True, slots=True)
class DGI:
    """One data grouping identifier and its value."""

    tag: int
    value: bytes

    def encode(self) -> bytes:
        if not 0 <= self.tag <= 0xFFFF:
            raise EncodeError(f"DGI {self.tag:#x} is not two bytes")
        n = len(self.value)
        if n > 0xFFFF:
            raise EncodeError("DGI value longer than 65535")
        length = bytes([n]) if n < 0xFF else b"\xff" + n.to_bytes(2, "big")
        return self.tag.to_bytes(2, "big") + length + self.value


def encode_dgis(dgis: list[DGI]) -> bytes:
    return b"".join(d.encode() for d in dgis)


def parse_dgis(data: bytes) -> list[DGI]:
    r = Reader(data, base=0)
    out: list[DGI] = []
    while not r.at_end():
        tag = int.from_bytes(r.take(2, "DGI"), "big")
        n = r.byte("DGI length")
        if n == 0xFF:
            n = int.from_bytes(r.take(2, "DGI extended length"), "big")
        out.append(DGI(tag, r.take(n, f"DGI {tag:04X} value")))
    return out


@dataclass(frozen=True, slots=True)
class StoreData:
    block_number: int
    data: bytes
    last: bool = True
    structure: DataStructure = DataStructure.NONE
    encryption: Encryption = Encryption.NONE
    response_expected: bool = False

    @property
    def p1(self) -> int:
        return (
            (0x80 if self.last else 0)
            | self.encryption
            | self.structure
            | (0x01 if self.response_expected else 0)
        )

    def to_apdu(self, *, cla: int = 0x80) -> CommandAPDU:
        if not 0 <= self.block_number <= 0xFF:
            raise EncodeError(f"block number {self.block_number} is not a byte")
        return gp_apdu(
            Ins.STORE_DATA,
            self.p1,
            self.block_number,
            self.data,
            le=256 if self.response_expected else None,
            cla=cla,
        )

    @classmethod
    def from_apdu(cls, apdu: CommandAPDU) -> StoreData:
        expect_ins(apdu, Ins.STORE_DATA, "STORE DATA")
        p1 = apdu.p1
        if p1 & 0x06:
            raise ParseError(f"STORE DATA P1 {p1:02X} sets RFU bits b3..b2", offset=2)
        try:
            structure = DataStructure(p1 & 0x18)
        except ValueError:
            raise ParseError(f"STORE DATA P1 {p1:02X}: structure 11 is RFU", offset=2) from None
        encryption_bits = p1 & 0x60
        if encryption_bits == 0x40:
            raise ParseError(f"STORE DATA P1 {p1:02X}: encryption 10 is RFU", offset=2)
        return cls(
            apdu.p2, apdu.data, bool(p1 & 0x80), structure, Encryption(encryption_bits), bool(p1 & 0x01)
        )

    def records(self) -> list[DGI] | list[tlv.TLV] | None:
        """The data objects in this block when its structure says how to read them."""
        if self.structure is DataStructure.DGI:
            return parse_dgis(self.data)
        if self.structure is DataStructure.BER_TLV:
            return tlv.parse_all(self.data)
        return None


def store_data_commands(
    data: bytes,
    *,
    structure: DataStructure = DataStructure.NONE,
    encryption: Encryption = Encryption.NONE,
    block_size: int = 239,
) -> list[StoreData]:
    """Split ``data`` into numbered STORE DATA blocks, the last one flagged."""
    if not data:
        return [StoreData(0, b"", True, structure, encryption)]
    chunks = [data[i : i + block_size] for i in range(0, len(data), block_size)]
    if len(chunks) > 256:
        raise EncodeError("STORE DATA sequence longer than 256 blocks")
    return [StoreData(i, c, i == len(chunks) - 1, structure, encryption) for i, c in enumerate(chunks)]
