"""LOAD (GP Card Spec v2.3.1 §11.6, §9.3.5): blocks numbered from 00, the load file ``E2* C4``
(Table 11-58), the load file data block hash announced by INSTALL [for load], and the applet AIDs
of a Java Card CAP file's Applet component (JCVM spec §6.5) as the load file's modules.
"""

from __future__ import annotations

import hashlib
import hmac

from gp import tlv
from gp.apdu import CommandAPDU
from gp.card.sd.authorization import _confirmation
from gp.card.sd.common import (
    SW_CONDITIONS,
    SW_NO_MEMORY,
    SW_NOT_FOUND,
    SW_P1P2,
    SW_WRONG_DATA,
    CardError,
    ChannelContext,
    _lv,
    _parse_error_sw,
    _require_auth,
    _require_operational,
)
from gp.card.state import (
    Application,
    CardState,
    LoadFile,
)
from gp.commands import install as ins
from gp.commands.types import AID
from gp.errors import ParseError


def _cap_modules(lfdb: bytes) -> list[AID]:
    """Applet AIDs from a Java Card CAP file's Applet component (JCVM spec §6.5), best effort."""
    modules: list[AID] = []
    pos = 0
    while pos + 3 <= len(lfdb):
        tag = lfdb[pos]
        size = int.from_bytes(lfdb[pos + 1 : pos + 3], "big")
        body = lfdb[pos + 3 : pos + 3 + size]
        if len(body) != size or not 1 <= tag <= 12:
            break
        if tag == 3 and body:
            i = 1
            for _ in range(body[0]):
                if i >= len(body):
                    break
                n = body[i]
                aid = body[i + 1 : i + 1 + n]
                if 5 <= len(aid) <= 16 and len(aid) == n:
                    modules.append(AID(aid))
                i += 1 + n + 2
        pos += 3 + size
    return modules


_HASHES = {20: hashlib.sha1, 32: hashlib.sha256, 48: hashlib.sha384, 64: hashlib.sha512}


def _load(state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU) -> bytes:
    _require_auth(ctx)
    _require_operational(state)
    pending = ctx.load
    if pending is None:
        raise CardError(SW_CONDITIONS, "no INSTALL [for load] precedes LOAD")
    try:
        block = ins.Load.from_apdu(cmd)
    except ParseError as e:
        ctx.load = None
        raise CardError(_parse_error_sw(e), e.problem) from None
    if block.block_number != pending.next_block:
        ctx.load = None
        raise CardError(SW_P1P2, f"LOAD block {block.block_number}, expected {pending.next_block}")
    pending.buffer += block.data
    pending.next_block += 1
    if len(pending.buffer) > state.memory_free():
        ctx.load = None
        raise CardError(SW_NO_MEMORY, "load file does not fit")
    if not block.last:
        if pending.next_block > 0xFF:
            ctx.load = None
            raise CardError(SW_P1P2, "LOAD block numbers exhausted")
        return b""
    ctx.load = None
    try:
        items = tlv.parse_all(bytes(pending.buffer))
    except ParseError as e:
        raise CardError(SW_WRONG_DATA, f"load file: {e.problem}") from None
    lfdbs = [t for t in items if t.tag == 0xC4]
    if len(lfdbs) != 1 or any(t.tag not in (0xC4, 0xE2) for t in items) or items[-1].tag != 0xC4:
        raise CardError(SW_WRONG_DATA, "load file must be E2* C4")
    lfdb = lfdbs[0].value
    if pending.digest:
        digest = _HASHES[len(pending.digest)](lfdb).digest()
        if not hmac.compare_digest(digest, pending.digest):
            raise CardError(SW_WRONG_DATA, "load file data block hash does not match")
    if pending.load_file_aid in state.load_files or pending.load_file_aid in state.applications:
        raise CardError(SW_CONDITIONS, "AID already present in the registry")
    target = state.applications.get(pending.sd_aid)
    if target is None:
        raise CardError(SW_NOT_FOUND, "associated Security Domain vanished")
    digest = pending.digest or hashlib.sha256(lfdb).digest()
    state.load_files[pending.load_file_aid] = LoadFile(
        pending.load_file_aid, pending.sd_aid, _cap_modules(lfdb), lfdb, digest
    )
    return _confirmation(state, sd, pending.delegated, _lv(pending.load_file_aid) + _lv(pending.sd_aid))
