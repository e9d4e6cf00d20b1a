"""SELECT, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE and MANAGE CHANNEL.

- SELECT by name: GP CS v2.3.1 §11.9 (Tables 11-87..11-90: P1 '04', P2 '00' first / '02' next
  occurrence; an empty data field selects the Issuer Security Domain; the Security Domain FCI of
  Table 11-91 with tag ``73`` Security Domain Management Data and ``9F65`` maximum command length).
- INITIALIZE UPDATE: GP CS v2.3.1 §11.12 and Amendment D v1.2 §7.1.1 (Table 7-2: response data).
- EXTERNAL AUTHENTICATE: Amendment D v1.2 §7.1.2 (Table 7-3: security level in P1).  Building and
  checking the cryptograms is :mod:`gp.scp03`'s job; this module only frames the command.
- MANAGE CHANNEL: ISO/IEC 7816-4 §11.1.2, GP CS v2.3.1 §11.7.
"""

from __future__ import annotations

from dataclasses import dataclass

from gp import tlv
from gp.apdu import CommandAPDU
from gp.commands._codec import Reader, expect_ins, gp_apdu
from gp.commands.types import AID, Ins
from gp.errors import EncodeError, ParseError

__all__ = [
    "FCI",
    "ExternalAuthenticate",
    "InitializeUpdate",
    "InitializeUpdateResponse",
    "ManageChannel",
    "Select",
]


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT by DF name; ``aid`` None selects the Issuer Security Domain (empty data field)."""

    aid: bytes | None
    next_occurrence: bool = False

    def to_apdu(self, *, channel: int = 0) -> CommandAPDU:
        return CommandAPDU(
            0x00, Ins.SELECT, 0x04, 0x02 if self.next_occurrence else 0x00, self.aid or b"", 256
        ).with_channel(channel)

    @classmethod
    def from_apdu(cls, apdu: CommandAPDU) -> Select:
        expect_ins(apdu, Ins.SELECT, "SELECT")
        if apdu.p1 != 0x04 or apdu.p2 not in (0x00, 0x02):
            raise ParseError(f"SELECT P1P2 {apdu.p1:02X}{apdu.p2:02X}: only by name, first/next", offset=2)
        if apdu.data and len(apdu.data) > 16:
            raise ParseError(f"SELECT data of {len(apdu.data)} bytes is longer than an AID", offset=5)
        return cls(apdu.data or None, apdu.p2 == 0x02)


@dataclass(frozen=True, slots=True)
class FCI:
    """File control information returned by SELECT (GP CS v2.3.1 Table 11-91)."""

    aid: bytes
    sd_management_data: bytes | None = None
    max_command_length: int | None = None
    proprietary: tuple[tlv.TLV, ...] = ()

    def encode(self) -> bytes:
        inner: list[tlv.TLV] = []
        if self.sd_management_data is not None:
            inner.append(tlv.TLV.build(0x73, self.sd_management_data))
        inner.extend(self.proprietary)
        if self.max_command_length is not None:
            inner.append(tlv.TLV.build(0x9F65, bytes([min(self.max_command_length, 255)])))
        children = [tlv.TLV.build(0x84, self.aid)]
        if inner:
            children.append(tlv.TLV.build(0xA5, inner))
        return tlv.encode(0x6F, children)

    @classmethod
    def parse(cls, data: bytes) -> FCI:
        top = tlv.parse_one(data)
        if top.tag != 0x6F:
            raise ParseError(f"FCI template tag {top.tag:X} is not 6F", offset=0)
        aid = top.find(0x84)
        if aid is None:
            raise ParseError("FCI without DF name (84)", offset=0)
        sdm = top.find(0x73)
        maxlen = top.find(0x9F65)
        extra = tuple(c for a5 in top.find_all(0xA5) for c in a5.children if c.tag not in (0x73, 0x9F65))
        return cls(
            aid.value,
            sdm.value if sdm is not None else None,
            int.from_bytes(maxlen.value, "big") if maxlen is not None and maxlen.value else None,
            extra,
        )


@dataclass(frozen=True, slots=True)
class InitializeUpdate:
    """INITIALIZE UPDATE ``80 50 KVN 00 Lc host_challenge 00``; KVN 0 = first available key set."""

    host_challenge: bytes
    key_version: int = 0

    def __post_init__(self) -> None:
        if len(self.host_challenge) not in (8, 16):
            raise EncodeError("the host challenge is 8 (S8) or 16 (S16) bytes")
        if not 0 <= self.key_version <= 0xFF:
            raise EncodeError(f"key version {self.key_version} is not a byte")

    def to_apdu(self, *, channel: int = 0) -> CommandAPDU:
        return gp_apdu(
            Ins.INITIALIZE_UPDATE, self.key_version, 0x00, self.host_challenge, le=256
        ).with_channel(channel)

    @classmethod
    def from_apdu(cls, apdu: CommandAPDU) -> InitializeUpdate:
        expect_ins(apdu, Ins.INITIALIZE_UPDATE, "INITIALIZE UPDATE")
        if apdu.p2 != 0x00:
            raise ParseError(f"INITIALIZE UPDATE P2 {apdu.p2:02X}: key identifier must be 00", offset=3)
        if len(apdu.data) not in (8, 16):
            raise ParseError(f"host challenge of {len(apdu.data)} bytes (8 or 16 expected)", offset=4)
        return cls(apdu.data, apdu.p1)


@dataclass(frozen=True, slots=True)
class InitializeUpdateResponse:
    """INITIALIZE UPDATE response data for SCP03, Amendment D v1.2 Table 7-2."""

    key_diversification_data: bytes
    key_version: int
    scp_id: int
    i_param: int
    card_challenge: bytes
    card_cryptogram: bytes
    sequence_counter: int | None

    @classmethod
    def parse(cls, data: bytes) -> InitializeUpdateResponse:
        r = Reader(data, base=0)
        kdd = r.take(10, "key diversification data")
        kvn = r.byte("key version")
        scp = r.byte("SCP identifier")
        if scp != 0x03:
            raise ParseError(f"SCP identifier {scp:02X} is not SCP03", offset=11)
        i = r.byte("i parameter")
        size = 16 if i & 0x01 else 8
        challenge = r.take(size, "card challenge")
        cryptogram = r.take(size, "card cryptogram")
        counter = None
        if not r.at_end():
            counter = int.from_bytes(r.take(3, "sequence counter"), "big")
        r.expect_end("INITIALIZE UPDATE response")
        return cls(kdd, kvn, scp, i, challenge, cryptogram, counter)

    def encode(self) -> bytes:
        out = self.key_diversification_data + bytes([self.key_version, self.scp_id, self.i_param])
        out += self.card_challenge + self.card_cryptogram
        if self.sequence_counter is not None:
            out += self.sequence_counter.to_bytes(3, "big")
        return out


@dataclass(frozen=True, slots=True)
class ExternalAuthenticate:
    """EXTERNAL AUTHENTICATE ``84 82 level 00 Lc cryptogram C-MAC`` (Amendment D v1.2 §7.1.2).

    The card-side check is :meth:`gp.scp03.CardSession.external_authenticate`; this type only
    splits the fields, e.g. for logging.
    """

    security_level: int
    host_cryptogram: bytes
    mac: bytes

    VALID_LEVELS = frozenset({0x00, 0x01, 0x03, 0x11, 0x13, 0x31, 0x33})

    @classmethod
    def from_apdu(cls, apdu: CommandAPDU) -> ExternalAuthenticate:
        expect_ins(apdu, Ins.EXTERNAL_AUTHENTICATE, "EXTERNAL AUTHENTICATE")
        if apdu.p1 not in cls.VALID_LEVELS or apdu.p2 != 0:
            raise ParseError(f"EXTERNAL AUTHENTICATE P1P2 {apdu.p1:02X}{apdu.p2:02X}", offset=2)
        if len(apdu.data) not in (16, 32):
            raise ParseError(f"EXTERNAL AUTHENTICATE data of {len(apdu.data)} bytes", offset=4)
        half = len(apdu.data) // 2
        return cls(apdu.p1, apdu.data[:half], apdu.data[half:])


@dataclass(frozen=True, slots=True)
class ManageChannel:
    """MANAGE CHANNEL open (``channel`` None = card assigns) or close."""

    close: bool = False
    channel: int | None = None

    def to_apdu(self, *, from_channel: int = 0) -> CommandAPDU:
        if self.close:
            if self.channel is None:
                raise EncodeError("closing needs a channel number")
            return CommandAPDU(0x00, Ins.MANAGE_CHANNEL, 0x80, self.channel).with_channel(from_channel)
        if self.channel is None:
            return CommandAPDU(0x00, Ins.MANAGE_CHANNEL, 0x00, 0x00, le=1).with_channel(from_channel)
        return CommandAPDU(0x00, Ins.MANAGE_CHANNEL, 0x00, self.channel).with_channel(from_channel)

    @classmethod
    def from_apdu(cls, apdu: CommandAPDU) -> ManageChannel:
        expect_ins(apdu, Ins.MANAGE_CHANNEL, "MANAGE CHANNEL")
        if apdu.data:
            raise ParseError("MANAGE CHANNEL has no command data", offset=4)
        if apdu.p1 not in (0x00, 0x80) or apdu.p2 > 19:
            raise ParseError(f"MANAGE CHANNEL P1P2 {apdu.p1:02X}{apdu.p2:02X}", offset=2)
        if apdu.p1 == 0x80:
            return cls(True, apdu.p2)
        return cls(False, apdu.p2 or None)


def aid_or_none(raw: bytes) -> AID | None:
    return AID(raw) if 5 <= len(raw) <= 16 else None
