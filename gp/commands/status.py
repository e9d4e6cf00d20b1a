"""GET STATUS and SET STATUS.

- GET STATUS: GP CS v2.3.1 §11.4 — P1 subset (Table 11-33: ``80`` ISD, ``40`` applications and
  SDs, ``20`` executable load files, ``10`` load files and their modules), P2 (Table 11-34: b2 =
  TLV format, b1 = next occurrence), search criteria ``4F`` (+ ``5C`` tag list); TLV response
  (Tables 11-36, 11-37: ``E3`` entries with ``4F``, ``9F70``, ``C5``, ``C4``, ``CC``, ``CE``,
  ``84``); ``6310`` more data.  The deprecated LV format (GP CS v2.2.1 Tables 11-35/11-36) is
  supported too because deployed cards and tools still use it.  Parsing is tolerant of what real
  cards send: a two-byte ``9F70`` (first byte is the state), unknown tags, RID-only ``CC``.
- SET STATUS: GP CS v2.3.1 §11.10 — P1 (Table 11-83: ``80`` card, ``40`` application or SD,
  ``60`` SD and its associated applications), P2 the new life cycle state (Tables 11-84, 11-85),
  data the target AID.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from gp import tlv
from gp.apdu import CommandAPDU
from gp.commands._codec import Reader, expect_ins, gp_apdu, lv
from gp.commands.types import AID, CardLifeCycle, Ins, LifeCycle, LoadFileLifeCycle, Privileges
from gp.errors import EncodeError, ParseError

__all__ = [
    "GetStatus",
    "RegistryEntry",
    "SetStatus",
    "SetStatusScope",
    "StatusScope",
    "encode_entries",
    "parse_status_response",
]


class StatusScope(IntEnum):
    ISD = 0x80
    APPLICATIONS = 0x40
    LOAD_FILES = 0x20
    LOAD_FILES_AND_MODULES = 0x10


AnyLifeCycle = CardLifeCycle | LifeCycle | LoadFileLifeCycle | int


@dataclass(frozen=True, slots=True)
class GetStatus:
    scope: StatusScope
    aid_prefix: bytes = b""
    next_occurrence: bool = False
    tlv_format: bool = True
    tag_list: bytes | None = None

    def to_apdu(self, *, cla: int = 0x80) -> CommandAPDU:
        p2 = (0x02 if self.tlv_format else 0x00) | (0x01 if self.next_occurrence else 0x00)
        data = tlv.encode(0x4F, self.aid_prefix)
        if self.tag_list is not None:
            data += tlv.encode(0x5C, self.tag_list)
        return gp_apdu(Ins.GET_STATUS, self.scope, p2, data, le=256, cla=cla)

    @classmethod
    def from_apdu(cls, apdu: CommandAPDU) -> GetStatus:
        expect_ins(apdu, Ins.GET_STATUS, "GET STATUS")
        try:
            scope = StatusScope(apdu.p1)
        except ValueError:
            raise ParseError(f"GET STATUS P1 {apdu.p1:02X}", offset=2) from None
        if apdu.p2 & 0xFC:
            raise ParseError(f"GET STATUS P2 {apdu.p2:02X}", offset=3)
        data = apdu.data
        if len(data) >= 2 and data[0] == 0x4F and data[1] == len(data) - 2 and data[1] < 0x80:
            # The usual criteria, a lone 4F: what the general parse below would find, minus its cost.
            if data[1] > 16:
                raise ParseError("GET STATUS AID criterion longer than 16 bytes", offset=7)
            return cls(scope, data[2:], bool(apdu.p2 & 0x01), bool(apdu.p2 & 0x02), None)
        try:
            items = tlv.parse_all(data)
        except ParseError as e:
            raise ParseError(f"GET STATUS search criteria: {e.problem}", offset=5 + e.offset) from None
        aid = [t for t in items if t.tag == 0x4F]
        if not aid:
            raise ParseError("GET STATUS without the 4F search criterion", offset=5)
        if len(aid[0].value) > 16:
            raise ParseError("GET STATUS AID criterion longer than 16 bytes", offset=7)
        tags = [t for t in items if t.tag == 0x5C]
        return cls(
            scope, aid[0].value, bool(apdu.p2 & 0x01), bool(apdu.p2 & 0x02), tags[0].value if tags else None
        )


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One GET STATUS entry: an application / SD, the ISD, or an executable load file."""

    aid: AID
    life_cycle: AnyLifeCycle
    privileges: Privileges | None = None
    load_file_aid: AID | None = None
    associated_sd_aid: bytes | None = None  # may be a RID on some cards
    version: bytes | None = None
    modules: tuple[AID, ...] = ()
    extra: tuple[tlv.TLV, ...] = ()

    @property
    def life_cycle_coding(self) -> int:
        lc = self.life_cycle
        return lc.coding if isinstance(lc, LifeCycle) else int(lc)

    @property
    def locked(self) -> bool:
        return isinstance(self.life_cycle, LifeCycle) and self.life_cycle.locked

    def encode_tlv(self, tag_list: bytes | None = None) -> bytes:
        # Every tag here is primitive, so each item is simply tag || length || value.
        items: list[tuple[int, bytes]] = [
            (0x4F, self.aid),
            (0x9F70, bytes((self.life_cycle_coding,))),
        ]
        if self.privileges is not None:
            items.append((0xC5, self.privileges.encode()))
        if self.load_file_aid is not None:
            items.append((0xC4, self.load_file_aid))
        if self.version is not None:
            items.append((0xCE, self.version))
        items.extend((0x84, m) for m in self.modules)
        if self.associated_sd_aid is not None:
            items.append((0xCC, self.associated_sd_aid))
        if tag_list is not None:
            wanted = _tag_list(tag_list)
            items = [t for t in items if t[0] in wanted]
        encode = tlv.encode
        return encode(0xE3, b"".join([encode(tag, bytes(value)) for tag, value in items]))

    def encode_lv(self, scope: StatusScope) -> bytes:
        privs = self.privileges.encode()[:1] if self.privileges is not None else b"\x00"
        out = lv(self.aid) + bytes([self.life_cycle_coding]) + privs
        if scope is StatusScope.LOAD_FILES_AND_MODULES:
            out += bytes([len(self.modules)]) + b"".join(lv(m) for m in self.modules)
        return out


def _tag_list(raw: bytes) -> set[int]:
    """Tags of a ``5C`` tag list (concatenated BER tags)."""
    out: set[int] = set()
    i = 0
    while i < len(raw):
        tag = raw[i]
        i += 1
        if tag & 0x1F == 0x1F:
            while i < len(raw):
                tag = (tag << 8) | raw[i]
                i += 1
                if not raw[i - 1] & 0x80:
                    break
        out.add(tag)
    return out


def encode_entries(
    entries: list[RegistryEntry], scope: StatusScope, *, tlv_format: bool, tag_list: bytes | None = None
) -> list[bytes]:
    """One encoded record per entry, for the card to page through."""
    return [e.encode_tlv(tag_list) if tlv_format else e.encode_lv(scope) for e in entries]


def _life_cycle(scope: StatusScope, coding: int) -> AnyLifeCycle:
    try:
        if scope is StatusScope.ISD:
            return CardLifeCycle(coding)
        if scope in (StatusScope.LOAD_FILES, StatusScope.LOAD_FILES_AND_MODULES):
            return LoadFileLifeCycle(coding)
        return LifeCycle.decode(coding)
    except (ValueError, ParseError):
        return coding  # a vendor coding: keep the number rather than reject the card


def parse_status_response(data: bytes, scope: StatusScope, *, tlv_format: bool = True) -> list[RegistryEntry]:
    """Entries of one GET STATUS response (without SW)."""
    return _parse_tlv(data, scope) if tlv_format else _parse_lv(data, scope)


def _parse_tlv(data: bytes, scope: StatusScope) -> list[RegistryEntry]:
    out: list[RegistryEntry] = []
    for top in tlv.parse_all(data, allow_padding=True):
        if top.tag != 0xE3:
            raise ParseError(f"GET STATUS entry tag {top.tag:X} is not E3", offset=0)
        fields: dict[int, tlv.TLV] = {}
        extra: list[tlv.TLV] = []
        modules: list[AID] = []
        for c in top.children:
            if c.tag == 0x84 and 5 <= len(c.value) <= 16:
                modules.append(AID(c.value))
            elif c.tag in (0x4F, 0x9F70, 0xC5, 0xC4, 0xCC, 0xCE) and c.tag not in fields:
                fields[c.tag] = c
            else:
                extra.append(c)
        if 0x4F not in fields or not 5 <= len(fields[0x4F].value) <= 16:
            raise ParseError("GET STATUS entry without a valid 4F AID", offset=0)
        if 0x9F70 not in fields or not fields[0x9F70].value:
            raise ParseError("GET STATUS entry without a life cycle (9F70)", offset=0)
        privs = None
        if 0xC5 in fields and fields[0xC5].value:
            raw = fields[0xC5].value
            value = int.from_bytes((raw + b"\x00\x00")[:3], "big")
            privs = Privileges(value & ~0x0F)
        elf = fields.get(0xC4)
        out.append(
            RegistryEntry(
                AID(fields[0x4F].value),
                _life_cycle(scope, fields[0x9F70].value[0]),
                privs,
                AID(elf.value) if elf is not None and 5 <= len(elf.value) <= 16 else None,
                fields[0xCC].value if 0xCC in fields else None,
                fields[0xCE].value if 0xCE in fields else None,
                tuple(modules),
                tuple(extra),
            )
        )
    return out


def _parse_lv(data: bytes, scope: StatusScope) -> list[RegistryEntry]:
    r = Reader(data, base=0)
    out: list[RegistryEntry] = []
    while not r.at_end():
        at = r.offset
        aid = r.lv("AID")
        if not 5 <= len(aid) <= 16:
            raise ParseError(f"AID of {len(aid)} bytes", offset=at)
        coding = r.byte("life cycle")
        priv = r.byte("privileges")
        modules: list[AID] = []
        if scope is StatusScope.LOAD_FILES_AND_MODULES:
            for _ in range(r.byte("number of modules")):
                at = r.offset
                m = r.lv("module AID")
                if not 5 <= len(m) <= 16:
                    raise ParseError(f"module AID of {len(m)} bytes", offset=at)
                modules.append(AID(m))
        is_elf = scope in (StatusScope.LOAD_FILES, StatusScope.LOAD_FILES_AND_MODULES)
        out.append(
            RegistryEntry(
                AID(aid),
                _life_cycle(scope, coding),
                None if is_elf else Privileges(priv << 16),
                modules=tuple(modules),
            )
        )
    return out


# --- SET STATUS --------------------------------------------------------------------------------


class SetStatusScope(IntEnum):
    CARD = 0x80
    APPLICATION = 0x40
    SECURITY_DOMAIN_AND_APPLICATIONS = 0x60


@dataclass(frozen=True, slots=True)
class SetStatus:
    """SET STATUS; ``state`` is the P2 coding (a card state, a state to reach, ``80`` lock, ``00`` unlock)."""

    scope: SetStatusScope
    state: int
    aid: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.state <= 0xFF:
            raise EncodeError("state is one byte")

    @classmethod
    def card(cls, state: CardLifeCycle, isd_aid: bytes = b"") -> SetStatus:
        return cls(SetStatusScope.CARD, int(state), isd_aid)

    @classmethod
    def lock(cls, aid: AID, *, with_applications: bool = False) -> SetStatus:
        scope = (
            SetStatusScope.SECURITY_DOMAIN_AND_APPLICATIONS
            if with_applications
            else SetStatusScope.APPLICATION
        )
        return cls(scope, 0x80, aid)

    @classmethod
    def unlock(cls, aid: AID, *, with_applications: bool = False) -> SetStatus:
        scope = (
            SetStatusScope.SECURITY_DOMAIN_AND_APPLICATIONS
            if with_applications
            else SetStatusScope.APPLICATION
        )
        return cls(scope, 0x00, aid)

    @classmethod
    def transition(cls, aid: AID, state: LifeCycle) -> SetStatus:
        return cls(SetStatusScope.APPLICATION, state.coding, aid)

    @property
    def is_lock(self) -> bool:
        return bool(self.state & 0x80) and self.scope is not SetStatusScope.CARD

    def to_apdu(self, *, cla: int = 0x80) -> CommandAPDU:
        return gp_apdu(Ins.SET_STATUS, self.scope, self.state, self.aid, cla=cla)

    @classmethod
    def from_apdu(cls, apdu: CommandAPDU) -> SetStatus:
        expect_ins(apdu, Ins.SET_STATUS, "SET STATUS")
        try:
            scope = SetStatusScope(apdu.p1)
        except ValueError:
            raise ParseError(f"SET STATUS P1 {apdu.p1:02X}", offset=2) from None
        if apdu.data and not 5 <= len(apdu.data) <= 16:
            raise ParseError(f"SET STATUS AID of {len(apdu.data)} bytes", offset=5)
        if scope is not SetStatusScope.CARD and not apdu.data:
            raise ParseError("SET STATUS of an application needs its AID", offset=4)
        return cls(scope, apdu.p2, apdu.data)
