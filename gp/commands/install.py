"""INSTALL and LOAD, with their tokens and confirmations.

- INSTALL: GP CS v2.3.1 §11.5 — P1 coding Table 11-41, data fields Tables 11-42..11-48 (for load,
  install, make selectable, extradition, registry update, personalization), install and load
  parameters Tables 11-49..11-51, response Table 11-54.
- LOAD: GP CS v2.3.1 §11.6 — P1 b8 last block, P2 block number, Load File structure (``E2`` DAP
  blocks then ``C4`` Load File Data Block) in Table 11-58.
- Delegated Management token data: GP CS v2.3.1 §C.4 (Tables C-3..C-6): ``P1 || P2 || Lc || data``
  where Lc and data stop before the token's length byte.
- Confirmation / receipt: GP CS v2.3.1 §11.1.6 (Table 11-14) and §C.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from gp import tlv
from gp.apdu import CommandAPDU
from gp.commands._codec import Reader, expect_ins, gp_apdu, lv
from gp.commands.types import AID, Ins, Privileges
from gp.errors import EncodeError, ParseError

__all__ = [
    "Confirmation",
    "InstallFor",
    "InstallForExtradition",
    "InstallForInstall",
    "InstallForLoad",
    "InstallForMakeSelectable",
    "InstallForPersonalization",
    "InstallForRegistryUpdate",
    "InstallParameters",
    "Load",
    "LoadParameters",
    "load_blocks",
    "parse_install",
    "token_data",
]


class InstallFor(IntEnum):
    """INSTALL P1 (Table 11-41), without b8 ("more INSTALL commands")."""

    LOAD = 0x02
    INSTALL = 0x04
    MAKE_SELECTABLE = 0x08
    INSTALL_AND_MAKE_SELECTABLE = 0x0C
    EXTRADITION = 0x10
    PERSONALIZATION = 0x20
    REGISTRY_UPDATE = 0x40


def token_data(p1: int, p2: int, data_before_token: bytes) -> bytes:
    """The data a Delegated Management token signs (GP CS v2.3.1 Tables C-3..C-6)."""
    if len(data_before_token) > 255:
        raise EncodeError("token data longer than a short Lc")
    return bytes([p1, p2, len(data_before_token)]) + data_before_token


@dataclass(frozen=True, slots=True)
class InstallParameters:
    """Install parameters (Table 11-49): ``C9`` application specific (mandatory), ``EF`` system
    parameters (``C7`` volatile quota, ``C8`` non-volatile quota, ...), others kept as they came."""

    application_specific: bytes = b""
    system: tuple[tlv.TLV, ...] = ()
    other: tuple[tlv.TLV, ...] = ()

    def encode(self) -> bytes:
        out = tlv.encode(0xC9, self.application_specific)
        if self.system:
            out += tlv.encode(0xEF, self.system)
        return out + b"".join(t.encode() for t in self.other)

    @classmethod
    def parse(cls, raw: bytes, *, offset: int = 0, require_c9: bool = True) -> InstallParameters:
        try:
            items = tlv.parse_all(raw)
        except ParseError as e:
            raise ParseError(f"install parameters: {e.problem}", offset=offset + e.offset) from None
        c9 = [t for t in items if t.tag == 0xC9]
        if require_c9 and not c9:
            raise ParseError("install parameters lack the mandatory C9 field", offset=offset)
        system = tuple(c for t in items if t.tag == 0xEF for c in t.children)
        other = tuple(t for t in items if t.tag not in (0xC9, 0xEF))
        return cls(c9[0].value if c9 else b"", system, other)

    def quota(self, tag: int) -> int | None:
        for t in self.system:
            if t.tag == tag and t.value:
                return int.from_bytes(t.value, "big")
        return None


@dataclass(frozen=True, slots=True)
class LoadParameters:
    """Load parameters (Table 11-50): ``EF`` {``C6`` NV code, ``C7`` volatile, ``C8`` NV data}."""

    system: tuple[tlv.TLV, ...] = ()
    other: tuple[tlv.TLV, ...] = ()

    def encode(self) -> bytes:
        out = tlv.encode(0xEF, self.system) if self.system else b""
        return out + b"".join(t.encode() for t in self.other)

    @classmethod
    def parse(cls, raw: bytes, *, offset: int = 0) -> LoadParameters:
        try:
            items = tlv.parse_all(raw)
        except ParseError as e:
            raise ParseError(f"load parameters: {e.problem}", offset=offset + e.offset) from None
        system = tuple(c for t in items if t.tag == 0xEF for c in t.children)
        return cls(system, tuple(t for t in items if t.tag != 0xEF))

    def size_hint(self) -> int:
        return sum(int.from_bytes(t.value, "big") for t in self.system if t.tag in (0xC6, 0xC8) and t.value)

    @classmethod
    def with_sizes(cls, *, code: int = 0, nv_data: int = 0, volatile: int = 0) -> LoadParameters:
        items = []
        if code:
            items.append(tlv.TLV.build(0xC6, code.to_bytes(2 if code < 65536 else 4, "big")))
        if volatile:
            items.append(tlv.TLV.build(0xC7, volatile.to_bytes(2, "big")))
        if nv_data:
            items.append(tlv.TLV.build(0xC8, nv_data.to_bytes(2 if nv_data < 65536 else 4, "big")))
        return cls(tuple(items))


class _Install:
    """Shared framing: subclasses give ``P1`` and the body without the token."""

    P1: InstallFor
    token: bytes

    def body(self) -> bytes:
        raise NotImplementedError

    def p2(self) -> int:
        return 0x00

    def p1(self) -> int:
        return int(self.P1)

    def token_data(self) -> bytes:
        return token_data(self.p1(), self.p2(), self.body())

    def to_apdu(self, *, more: bool = False, cla: int = 0x80) -> CommandAPDU:
        p1 = self.p1() | (0x80 if more else 0)
        return gp_apdu(Ins.INSTALL, p1, self.p2(), self.body() + lv(self.token), le=256, cla=cla)


@dataclass(frozen=True, slots=True)
class InstallForLoad(_Install):
    load_file_aid: AID
    security_domain_aid: AID | None = None
    load_file_hash: bytes = b""
    parameters: LoadParameters = field(default_factory=LoadParameters)
    token: bytes = b""

    P1 = InstallFor.LOAD

    def body(self) -> bytes:
        return (
            lv(self.load_file_aid)
            + lv(self.security_domain_aid or b"")
            + lv(self.load_file_hash)
            + lv(self.parameters.encode())
        )


@dataclass(frozen=True, slots=True)
class InstallForInstall(_Install):
    """[for install] and, with ``make_selectable``, [for install and make selectable]."""

    load_file_aid: AID
    module_aid: AID
    application_aid: AID
    privileges: Privileges = Privileges.NONE
    parameters: InstallParameters = field(default_factory=InstallParameters)
    token: bytes = b""
    make_selectable: bool = True

    P1 = InstallFor.INSTALL

    def p1(self) -> int:
        return int(InstallFor.INSTALL_AND_MAKE_SELECTABLE if self.make_selectable else InstallFor.INSTALL)

    def body(self) -> bytes:
        return (
            lv(self.load_file_aid)
            + lv(self.module_aid)
            + lv(self.application_aid)
            + lv(self.privileges.encode())
            + lv(self.parameters.encode())
        )


@dataclass(frozen=True, slots=True)
class InstallForMakeSelectable(_Install):
    application_aid: AID
    privileges: Privileges = Privileges.NONE
    parameters: bytes = b""
    token: bytes = b""

    P1 = InstallFor.MAKE_SELECTABLE

    def body(self) -> bytes:
        return b"\x00\x00" + lv(self.application_aid) + lv(self.privileges.encode()) + lv(self.parameters)


@dataclass(frozen=True, slots=True)
class InstallForExtradition(_Install):
    """Associate an application or load file with another Security Domain (Table 11-45)."""

    security_domain_aid: AID
    aid: AID
    parameters: bytes = b""
    token: bytes = b""

    P1 = InstallFor.EXTRADITION

    def body(self) -> bytes:
        return lv(self.security_domain_aid) + b"\x00" + lv(self.aid) + b"\x00" + lv(self.parameters)


@dataclass(frozen=True, slots=True)
class InstallForRegistryUpdate(_Install):
    """Update privileges and/or the associated SD of an application (Table 11-46)."""

    application_aid: AID | None = None
    security_domain_aid: AID | None = None
    privileges: Privileges | None = None
    parameters: bytes = b""
    token: bytes = b""

    P1 = InstallFor.REGISTRY_UPDATE

    def body(self) -> bytes:
        privs = self.privileges.encode() if self.privileges is not None else b""
        return (
            lv(self.security_domain_aid or b"")
            + b"\x00"
            + lv(self.application_aid or b"")
            + lv(privs)
            + lv(self.parameters)
        )


@dataclass(frozen=True, slots=True)
class InstallForPersonalization(_Install):
    """Route following STORE DATA (and PUT KEY) commands to ``application_aid`` (Table 11-47)."""

    application_aid: AID
    token: bytes = b""

    P1 = InstallFor.PERSONALIZATION

    def body(self) -> bytes:
        return b"\x00\x00" + lv(self.application_aid) + b"\x00\x00"


InstallCommand = (
    InstallForLoad
    | InstallForInstall
    | InstallForMakeSelectable
    | InstallForExtradition
    | InstallForRegistryUpdate
    | InstallForPersonalization
)


def _aid(raw: bytes, offset: int, what: str) -> AID:
    if not 5 <= len(raw) <= 16:
        raise ParseError(f"{what} of {len(raw)} bytes is not an AID", offset=offset)
    return AID(raw)


def _opt_aid(raw: bytes, offset: int, what: str) -> AID | None:
    return _aid(raw, offset, what) if raw else None


def _empty(r: Reader, what: str) -> None:
    at = r.offset
    if r.lv(what):
        raise ParseError(f"{what} must be empty", offset=at)


def parse_install(apdu: CommandAPDU) -> tuple[InstallCommand, bool]:
    """The typed INSTALL command and its "more commands" flag (P1 b8).

    Raises :class:`ParseError` for unknown P1 values (the card answers ``6A86``) as well as for
    malformed data (``6A80``); the message says which.
    """
    expect_ins(apdu, Ins.INSTALL, "INSTALL")
    more = bool(apdu.p1 & 0x80)
    try:
        kind = InstallFor(apdu.p1 & 0x7F)
    except ValueError:
        raise ParseError(f"INSTALL P1 {apdu.p1:02X} is not a known combination", offset=2) from None
    if apdu.p2 not in (0x00, 0x01, 0x03):
        raise ParseError(f"INSTALL P2 {apdu.p2:02X}", offset=3)
    r = Reader(apdu.data)
    cmd: InstallCommand
    if kind is InstallFor.LOAD:
        at = r.offset
        elf = _aid(r.lv("load file AID"), at, "load file AID")
        at = r.offset
        sd = _opt_aid(r.lv("security domain AID"), at, "security domain AID")
        digest = r.lv("load file data block hash")
        at = r.offset
        params = LoadParameters.parse(r.lv("load parameters"), offset=at + 1)
        token = r.lv("load token")
        cmd = InstallForLoad(elf, sd, digest, params, token)
    elif kind in (InstallFor.INSTALL, InstallFor.INSTALL_AND_MAKE_SELECTABLE):
        at = r.offset
        elf = _aid(r.lv("load file AID"), at, "executable load file AID")
        at = r.offset
        module = _aid(r.lv("module AID"), at, "executable module AID")
        at = r.offset
        app = _aid(r.lv("application AID"), at, "application AID")
        at = r.offset
        privs = Privileges.decode(r.lv("privileges"), offset=at + 1)
        at = r.offset
        params = InstallParameters.parse(r.lv("install parameters"), offset=at + 1)
        token = r.lv("install token")
        cmd = InstallForInstall(
            elf, module, app, privs, params, token, kind is InstallFor.INSTALL_AND_MAKE_SELECTABLE
        )
    elif kind is InstallFor.MAKE_SELECTABLE:
        _empty(r, "load file AID")
        _empty(r, "module AID")
        at = r.offset
        app = _aid(r.lv("application AID"), at, "application AID")
        at = r.offset
        raw_privs = r.lv("privileges")
        privs = Privileges.decode(raw_privs, offset=at + 1) if raw_privs else Privileges.NONE
        params_raw = r.lv("make selectable parameters")
        token = r.lv("make selectable token")
        cmd = InstallForMakeSelectable(app, privs, params_raw, token)
    elif kind is InstallFor.EXTRADITION:
        at = r.offset
        sd = _aid(r.lv("security domain AID"), at, "security domain AID")
        _empty(r, "second field")
        at = r.offset
        target = _aid(r.lv("application or load file AID"), at, "application or load file AID")
        _empty(r, "fourth field")
        params_raw = r.lv("extradition parameters")
        token = r.lv("extradition token")
        cmd = InstallForExtradition(sd, target, params_raw, token)
    elif kind is InstallFor.REGISTRY_UPDATE:
        at = r.offset
        sd = _opt_aid(r.lv("security domain AID"), at, "security domain AID")
        _empty(r, "second field")
        at = r.offset
        app = _opt_aid(r.lv("application AID"), at, "application AID")
        at = r.offset
        raw_privs = r.lv("privileges")
        privs = Privileges.decode(raw_privs, offset=at + 1) if raw_privs else None
        params_raw = r.lv("registry update parameters")
        token = r.lv("registry update token")
        cmd = InstallForRegistryUpdate(app, sd, privs, params_raw, token)
    else:  # PERSONALIZATION
        _empty(r, "first field")
        _empty(r, "second field")
        at = r.offset
        app = _aid(r.lv("application AID"), at, "application AID")
        _empty(r, "fourth field")
        _empty(r, "fifth field")
        token = r.lv("sixth field")
        cmd = InstallForPersonalization(app, token)
    r.expect_end("INSTALL data")
    return cmd, more


# --- LOAD -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """One LOAD command: a block of the Load File (Table 11-58)."""

    block_number: int
    last: bool
    data: bytes

    def to_apdu(self, *, cla: int = 0x80) -> CommandAPDU:
        if not 0 <= self.block_number <= 0xFF:
            raise EncodeError(f"LOAD block number {self.block_number} is not a byte")
        return gp_apdu(Ins.LOAD, 0x80 if self.last else 0x00, self.block_number, self.data, le=256, cla=cla)

    @classmethod
    def from_apdu(cls, apdu: CommandAPDU) -> Load:
        expect_ins(apdu, Ins.LOAD, "LOAD")
        if apdu.p1 & 0x7F:
            raise ParseError(f"LOAD P1 {apdu.p1:02X}: only b8 is defined", offset=2)
        if not apdu.data:
            raise ParseError("LOAD without data", offset=4)
        return cls(apdu.p2, bool(apdu.p1 & 0x80), apdu.data)


def load_file(load_file_data_block: bytes, *, dap_blocks: tuple[tuple[AID, bytes], ...] = ()) -> bytes:
    """The Load File: optional ``E2 {4F SD AID, C3 signature}`` DAP blocks, then ``C4`` LFDB."""
    out = b""
    for sd_aid, signature in dap_blocks:
        out += tlv.encode(0xE2, [tlv.TLV.build(0x4F, sd_aid), tlv.TLV.build(0xC3, signature)])
    return out + tlv.encode(0xC4, load_file_data_block)


def load_blocks(
    load_file_data_block: bytes,
    *,
    block_size: int = 239,
    dap_blocks: tuple[tuple[AID, bytes], ...] = (),
) -> list[Load]:
    """The LOAD commands carrying ``load_file_data_block`` in blocks of at most ``block_size`` bytes.

    The default leaves room for an 8-byte C-MAC and 16 bytes of C-DECRYPTION padding in 255.
    """
    if not 1 <= block_size <= 255:
        raise EncodeError(f"block size {block_size} out of 1..255")
    whole = load_file(load_file_data_block, dap_blocks=dap_blocks)
    chunks = [whole[i : i + block_size] for i in range(0, len(whole), block_size)]
    if len(chunks) > 256:
        raise EncodeError(f"load file needs {len(chunks)} blocks; at most 256 are numbered")
    return [Load(i, i == len(chunks) - 1, c) for i, c in enumerate(chunks)]


# --- confirmation (receipt) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A confirmation (Table 11-14): receipt, counter, SD unique data and optional token fields.

    The response to INSTALL / LOAD / DELETE is ``00`` (no confirmation) or ``LV(receipt) || data``.
    """

    receipt: bytes
    counter: int
    sd_unique_data: bytes
    token_identifier: bytes | None = None
    token_data_digest: bytes | None = None

    def confirmation_data(self) -> bytes:
        out = b"\x02" + self.counter.to_bytes(2, "big") + lv(self.sd_unique_data)
        if self.token_identifier is not None or self.token_data_digest is not None:
            out += lv(self.token_identifier or b"") + lv(self.token_data_digest or b"")
        return out

    def encode(self) -> bytes:
        return lv(self.receipt) + self.confirmation_data()

    @classmethod
    def parse_response(cls, data: bytes) -> Confirmation | None:
        """None for the ``00`` (or empty) response that carries no confirmation."""
        if data in (b"", b"\x00"):
            return None
        r = Reader(data, base=0)
        receipt = r.lv("receipt")
        counter_raw = r.lv("confirmation counter")
        if len(counter_raw) != 2:
            raise ParseError("confirmation counter is 2 bytes", offset=r.offset)
        unique = r.lv("security domain unique data")
        token_id = r.lv("token identifier") if not r.at_end() else None
        digest = r.lv("token data digest") if not r.at_end() else None
        r.expect_end("confirmation")
        return cls(receipt, int.from_bytes(counter_raw, "big"), unique, token_id, digest)
