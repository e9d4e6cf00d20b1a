"""Card content from a script's answers: GET STATUS (GP Card Spec v2.3.1 §11.4) and GET DATA (§11.3).

:func:`parse_inventory` reads the GET STATUS responses of an outcome (typically of
:func:`jobs.compiler.payloads.read_status`) with :func:`gp.commands.parse_status_response`:
scope ``80`` gives the ISD and the card life cycle (Table 11-6), ``40`` the applications and
Security Domains with their life cycle (Tables 11-4, 11-5), privileges (Tables 11-7..11-9) and
associated SD, ``10`` / ``20`` the executable load files (Table 11-3) and their modules.
"next occurrence" answers (``6310`` then ``9000``) are concatenated.  GET DATA ``00E0`` gives the
key information template (§11.3.3.1) and ``9F7F`` the CPLC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from gp.apdu import CommandAPDU, ResponseAPDU
from gp.commands import (
    AID,
    CPLC,
    CardLifeCycle,
    GetData,
    GetStatus,
    KeyInformation,
    LifeCycle,
    RegistryEntry,
    StatusScope,
    parse_key_information,
    parse_status_response,
)
from gp.errors import GPError
from jobs.compiler.session import CommandResult, PayloadCommand, ScriptError, ScriptOutcome

__all__ = ["CardInventory", "app_state", "key_versions", "parse_inventory", "sd_present"]

_GET_STATUS = 0xF2
_GET_DATA = 0xCA


@dataclass
class CardInventory:
    """What the SD whose session read the card may see of it."""

    isd: RegistryEntry | None = None
    security_domains: list[RegistryEntry] = field(default_factory=list)
    applications: list[RegistryEntry] = field(default_factory=list)
    load_files: list[RegistryEntry] = field(default_factory=list)
    keys: list[KeyInformation] | None = None
    cplc: CPLC | None = None
    complete: bool = True  # False when a GET STATUS listing still had "more data" (6310)
    scopes_read: set[int] = field(default_factory=set)

    @property
    def card_life_cycle(self) -> CardLifeCycle | int | None:
        return None if self.isd is None else self.isd.life_cycle  # type: ignore[return-value]

    def entry(self, aid: bytes) -> RegistryEntry | None:
        for e in [*self.security_domains, *self.applications]:
            if e.aid == aid:
                return e
        return None

    def load_file(self, aid: bytes) -> RegistryEntry | None:
        return next((e for e in self.load_files if e.aid == aid), None)

    def key_versions(self) -> set[int]:
        return {k.kvn for k in self.keys or []}

    def to_dict(self) -> dict[str, object]:
        return {
            "isd": _entry_dict(self.isd) if self.isd is not None else None,
            "security_domains": [_entry_dict(e) for e in self.security_domains],
            "applications": [_entry_dict(e) for e in self.applications],
            "load_files": [_entry_dict(e) for e in self.load_files],
            "keys": None
            if self.keys is None
            else [
                {"kid": k.kid, "kvn": k.kvn, "components": [[int(t), n] for t, n in k.components]}
                for k in self.keys
            ],
            "cplc": self.cplc.encode().hex().upper() if self.cplc is not None else None,
            "complete": self.complete,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def _life_cycle_name(entry: RegistryEntry) -> str:
    lc = entry.life_cycle
    if isinstance(lc, CardLifeCycle):
        return lc.name
    if isinstance(lc, LifeCycle):
        names = {0x03: "INSTALLED", 0x07: "SELECTABLE", 0x0F: "PERSONALIZED"}
        base = names.get(lc.state, f"{lc.state:02X}")
        return f"{base}+LOCKED" if lc.locked else base
    if hasattr(lc, "name"):
        return str(lc.name)
    return f"{int(lc):02X}"


def _entry_dict(e: RegistryEntry) -> dict[str, object]:
    return {
        "aid": e.aid.hex().upper(),
        "life_cycle": e.life_cycle_coding,
        "life_cycle_name": _life_cycle_name(e),
        "locked": e.locked,
        "privileges": None if e.privileges is None else e.privileges.encode().hex().upper(),
        "privilege_names": None if e.privileges is None else e.privileges.names(),
        "associated_sd": None if e.associated_sd_aid is None else e.associated_sd_aid.hex().upper(),
        "load_file": None if e.load_file_aid is None else e.load_file_aid.hex().upper(),
        "modules": [m.hex().upper() for m in e.modules],
    }


def _pairs(
    source: ScriptOutcome
    | Iterable[CommandResult]
    | Iterable[tuple[PayloadCommand | bytes, ResponseAPDU | bytes]],
) -> list[tuple[bytes, ResponseAPDU]]:
    items = source.results if isinstance(source, ScriptOutcome) else source
    out: list[tuple[bytes, ResponseAPDU]] = []
    for item in items:
        if isinstance(item, CommandResult):
            out.append((item.command.apdu, item.response))
            continue
        cmd, rsp = item
        raw_cmd = cmd.apdu if isinstance(cmd, PayloadCommand) else bytes(cmd)
        out.append((raw_cmd, rsp if isinstance(rsp, ResponseAPDU) else ResponseAPDU.parse(bytes(rsp))))
    return out


def parse_inventory(
    outcome_or_responses: ScriptOutcome
    | Iterable[CommandResult]
    | Iterable[tuple[PayloadCommand | bytes, ResponseAPDU | bytes]],
) -> CardInventory:
    """The inventory from the (plain) GET STATUS / GET DATA answers of an outcome.

    Accepts a :class:`ScriptOutcome`, its ``results``, or ``(plain command, plain response)``
    pairs.  Other commands are ignored.  Malformed answers raise :class:`ScriptError`.
    """
    inv = CardInventory()
    pending: dict[StatusScope, bool] = {}  # scope -> last answer was 6310
    for raw_cmd, rsp in _pairs(outcome_or_responses):
        try:
            cmd = CommandAPDU.parse(raw_cmd)
            if cmd.ins == _GET_STATUS:
                _status(inv, GetStatus.from_apdu(cmd), rsp, pending)
            elif cmd.ins == _GET_DATA and rsp.sw == 0x9000:
                tag = GetData.from_apdu(cmd).tag
                if tag == 0x00E0:
                    inv.keys = parse_key_information(rsp.data)
                elif tag == 0x9F7F:
                    inv.cplc = CPLC.parse(rsp.data)
        except GPError as e:
            raise ScriptError(f"cannot interpret the answer to {raw_cmd[:4].hex().upper()}: {e}") from None
    inv.complete = not any(pending.values())
    return inv


def _status(inv: CardInventory, gs: GetStatus, rsp: ResponseAPDU, pending: dict[StatusScope, bool]) -> None:
    if gs.next_occurrence and not pending.get(gs.scope):
        return  # a continuation sent blindly after a complete answer (6985 / 6A88)
    if rsp.sw not in (0x9000, 0x6310):
        pending[gs.scope] = False
        if rsp.sw == 0x6A88:
            inv.scopes_read.add(int(gs.scope))
        return
    pending[gs.scope] = rsp.sw == 0x6310
    inv.scopes_read.add(int(gs.scope))
    entries = parse_status_response(rsp.data, gs.scope, tlv_format=gs.tlv_format)
    for e in entries:
        if gs.scope is StatusScope.ISD:
            inv.isd = e
        elif gs.scope is StatusScope.APPLICATIONS:
            target = (
                inv.security_domains
                if e.privileges is not None and e.privileges.is_security_domain
                else inv.applications
            )
            if all(x.aid != e.aid for x in target):
                target.append(e)
        elif all(x.aid != e.aid for x in inv.load_files):
            inv.load_files.append(e)


def sd_present(inv: CardInventory, aid: bytes) -> bool:
    """True when a Security Domain with this AID is listed (the ISD counts)."""
    target = AID(aid)
    if inv.isd is not None and inv.isd.aid == target:
        return True
    return any(e.aid == target for e in inv.security_domains)


def app_state(inv: CardInventory, aid: bytes) -> LifeCycle | None:
    """The life cycle of an application or SD (None when absent from the inventory)."""
    e = inv.entry(AID(aid))
    if e is None:
        return None
    lc = e.life_cycle
    return lc if isinstance(lc, LifeCycle) else LifeCycle.decode(int(lc))


def key_versions(inv: CardInventory) -> set[int]:
    """The key version numbers of the key information template read, if any."""
    return inv.key_versions()
