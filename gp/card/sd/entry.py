"""The Security Domain's command router (GP Card Spec v2.3.1 §11, commands of Table 11-2).

One plain (already unwrapped) command on the SD selected on a channel: resets the transient
per-channel state a command ends (§7.3.2 personalization routing, §11.6.2 LOAD sequence, §11.4.2
GET STATUS continuation), refuses what a TERMINATED card or an interindustry class may not do, and
hands over to the handler module of the instruction.
"""

from __future__ import annotations

from collections.abc import Set

from gp.apdu import CommandAPDU
from gp.card.sd.common import (
    SW_CONDITIONS,
    SW_INS,
    SW_OK,
    CardError,
    ChannelContext,
)
from gp.card.sd.delete import _delete
from gp.card.sd.get_data import _get_data
from gp.card.sd.install import _install
from gp.card.sd.keys import _put_key
from gp.card.sd.lifecycle import _set_status
from gp.card.sd.load import _load
from gp.card.sd.status import _get_status
from gp.card.sd.store_data import _store_data
from gp.card.state import (
    Application,
    CardState,
)
from gp.commands.types import AID, CardLifeCycle

_PROPRIETARY_ONLY = frozenset({0xE6, 0xE8, 0xE4, 0xD8, 0xE2, 0xF2, 0xF0})


def process(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    """Run one plain (already unwrapped) command on Security Domain ``sd``.

    Personalization routing ends with the first command that is neither STORE DATA nor PUT KEY
    (GP CS v2.3.1 §7.3.2); a LOAD sequence ends with anything but LOAD (§11.6.2).
    """
    insb = cmd.ins
    if insb not in (0xE2, 0xD8):
        ctx.perso_target = None
        ctx.store_next_block = 0
    if insb != 0xE8:
        ctx.load = None
    if insb != 0xF2:
        ctx.status_pending = None
    if state.life_cycle is CardLifeCycle.TERMINATED and insb != 0xCA:
        raise CardError(SW_CONDITIONS, "card terminated")
    if insb in _PROPRIETARY_ONLY and not cmd.is_proprietary:
        raise CardError(0x6E00, "GP command with an interindustry class")
    if insb == 0xE6:
        return _install(state, ctx, sd, cmd), SW_OK
    if insb == 0xE8:
        return _load(state, ctx, sd, cmd), SW_OK
    if insb == 0xE4:
        return _delete(state, ctx, sd, cmd, selected), SW_OK
    if insb == 0xD8:
        return _put_key(state, ctx, sd, cmd), SW_OK
    if insb == 0xE2:
        return _store_data(state, ctx, sd, cmd), SW_OK
    if insb == 0xF2:
        return _get_status(state, ctx, sd, cmd)
    if insb == 0xF0:
        return _set_status(state, ctx, sd, cmd), SW_OK
    if insb == 0xCA:
        return _get_data(state, sd, cmd), SW_OK
    raise CardError(SW_INS, f"instruction {insb:02X} not supported")
