"""GET STATUS (GP Card Spec v2.3.1 §11.4): the registry entries the SD may see (§6.6.1 Global
Registry), TLV or legacy coding, paged with ``6310`` and P2 "next occurrence" (§11.4.2.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from gp.apdu import CommandAPDU
from gp.card.registry import status_entries
from gp.card.sd.common import (
    _RESPONSE_BUDGET,
    SW_CONDITIONS,
    SW_MORE,
    SW_NOT_FOUND,
    SW_OK,
    CardError,
    ChannelContext,
    _parse_error_sw,
    _require_auth,
)
from gp.card.state import (
    Application,
    CardState,
)
from gp.commands.status import GetStatus, encode_entries
from gp.commands.types import CardLifeCycle
from gp.errors import ParseError


def _parse(cmd: CommandAPDU) -> GetStatus:
    try:
        return GetStatus.from_apdu(cmd)
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None


def _get_status(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU
) -> tuple[bytes, int]:
    _require_auth(ctx)
    if state.life_cycle is CardLifeCycle.TERMINATED:
        raise CardError(SW_CONDITIONS, "card terminated")
    p2 = cmd.p2
    if p2 & 0x01:  # next occurrence: continue the pending listing
        gs = _parse(cmd)
        pending = ctx.status_pending
        if pending is None or pending[0] is not gs.scope:
            raise CardError(SW_CONDITIONS, "no GET STATUS to continue")
        scope = gs.scope
        out, rest = _page(pending[1])
    else:
        # The first page depends on nothing but the state, the acting SD and the command:
        # memoised in state.responses, which every mutating command empties (CardState.changed).
        key = (0xF2, sd.aid, cmd.p1, p2, cmd.data)
        memo = state.responses.get(key)
        if memo is None:
            gs = _parse(cmd)
            entries = status_entries(state, sd, gs.scope, gs.aid_prefix)
            if not entries:
                ctx.status_pending = None
                raise CardError(SW_NOT_FOUND, "no matching entry")
            records = encode_entries(entries, gs.scope, tlv_format=gs.tlv_format, tag_list=gs.tag_list)
            memo = state.responses[key] = (gs.scope, *_page(records))
        scope, out, rest = memo
    if rest:
        ctx.status_pending = (scope, list(rest))
        return out, SW_MORE
    ctx.status_pending = None
    return out, SW_OK


def _page(records: Sequence[bytes]) -> tuple[bytes, tuple[bytes, ...]]:
    """The records that fit in one response, and the rest (GP CS v2.3.1 §11.4.2.1 ``6310``)."""
    out = b""
    taken = 0
    for r in records:
        if out and len(out) + len(r) > _RESPONSE_BUDGET:
            break
        out += r
        taken += 1
    return out, tuple(records[taken:])
