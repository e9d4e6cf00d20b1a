"""The Security Domain's command router (GP Card Spec v2.3.1 §11, commands of Table 11-2).

One plain (already unwrapped) command on the SD selected on a channel: resets the transient
per-channel state a command ends (§7.3.2 personalization routing, §11.6.2 LOAD sequence, §11.4.2
GET STATUS continuation), refuses what a TERMINATED card or an interindustry class may not do, and
hands over to the handler module of the instruction.
"""

from __future__ import annotations

from collections.abc import Callable, Set

from gp.apdu import CommandAPDU
from gp.card.sd.common import (
    SW_CONDITIONS,
    SW_INS,
    SW_OK,
    SW_SECURITY,
    CardError,
    ChannelContext,
)
from gp.card.sd.delete import _delete
from gp.card.sd.get_data import _get_data
from gp.card.sd.install import _install
from gp.card.sd.keys import _put_key
from gp.card.sd.lifecycle import _set_status
from gp.card.sd.load import _load
from gp.card.sd.session_key import _derive_session_key
from gp.card.sd.status import _get_status
from gp.card.sd.store_data import _store_data
from gp.card.state import (
    Application,
    CardState,
)
from gp.commands.types import AID, CardLifeCycle

_PROPRIETARY_ONLY = frozenset({0xE6, 0xE8, 0xE4, 0xD8, 0xE2, 0xF2, 0xF0, 0x5A})
# The handlers that may edit the registry or a key store (SoftCard.MUTATING_INS is the same set):
# each runs between two CardState.changed() calls, which empty the memo of read-only answers.
MUTATING_INS = frozenset({0xE6, 0xE8, 0xE4, 0xD8, 0xE2, 0xF0})


def _run_install(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    return _install(state, ctx, sd, cmd), SW_OK


def _run_load(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    return _load(state, ctx, sd, cmd), SW_OK


def _run_delete(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    return _delete(state, ctx, sd, cmd, selected), SW_OK


def _run_put_key(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    return _put_key(state, ctx, sd, cmd), SW_OK


def _run_store_data(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    return _store_data(state, ctx, sd, cmd), SW_OK


def _run_get_status(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    return _get_status(state, ctx, sd, cmd)


def _run_set_status(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    return _set_status(state, ctx, sd, cmd), SW_OK


def _run_get_data(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    return _get_data(state, sd, cmd), SW_OK


def _run_derive_session_key(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    return _derive_session_key(state, ctx, sd, cmd), SW_OK


Handler = Callable[[CardState, ChannelContext, Application, CommandAPDU, Set[AID]], tuple[bytes, int]]

# The flat dispatch table: INS -> handler (the class byte is checked by process()).
HANDLERS: dict[int, Handler] = {
    0xE6: _run_install,
    0xE8: _run_load,
    0xE4: _run_delete,
    0xD8: _run_put_key,
    0xE2: _run_store_data,
    0xF2: _run_get_status,
    0xF0: _run_set_status,
    0xCA: _run_get_data,
    0x5A: _run_derive_session_key,  # proprietary: gp.sessionkeys, docs/session-keys.md
}


def process(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> tuple[bytes, int]:
    """Run one plain (already unwrapped) command on Security Domain ``sd``.

    Personalization routing ends with the first command that is neither STORE DATA nor PUT KEY
    (GP CS v2.3.1 §7.3.2); a LOAD sequence ends with anything but LOAD (§11.6.2). In an OCE
    session (SCP11a/c) only INSTALL [for personalization], STORE DATA and GET STATUS run; anything
    else is 6982 and changes nothing.
    """
    insb = cmd.ins
    if ctx.oce_session and not (insb in (0xE2, 0xF2) or (insb == 0xE6 and cmd.p1 == 0x20)):
        # An OCE (SCP11a/c) session is a provider's: it delivers a key set to an SSD and reads the
        # registry, nothing else (docs/key-loading-package.md §8).
        raise CardError(SW_SECURITY, "an OCE session may only personalise an SSD's keys")
    if insb != 0xE2 and insb != 0xD8:
        ctx.perso_target = None
        ctx.store_next_block = 0
    if insb != 0xE2:
        ctx.key_package = None
    if insb != 0xE8:
        ctx.load = None
    if insb != 0xF2:
        ctx.status_pending = None
    if state.life_cycle is CardLifeCycle.TERMINATED and insb != 0xCA:
        raise CardError(SW_CONDITIONS, "card terminated")
    handler = HANDLERS.get(insb)
    if handler is None:
        raise CardError(SW_INS, f"instruction {insb:02X} not supported")
    if insb in _PROPRIETARY_ONLY and not cmd.cla & 0x80:
        raise CardError(0x6E00, "GP command with an interindustry class")
    if insb not in MUTATING_INS:
        return handler(state, ctx, sd, cmd, selected)
    state.changed()
    try:
        return handler(state, ctx, sd, cmd, selected)
    finally:
        state.changed()
