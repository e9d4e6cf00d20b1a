"""SET STATUS (GP Card Spec v2.3.1 §11.10): card life cycle transitions (§5.1, Figure 5-1: OP_READY
→ INITIALIZED → SECURED ↔ CARD_LOCKED → TERMINATED), locking and unlocking applications and Security
Domains with those associated (§5.2, §5.3, §9.6), and the SD's own SELECTABLE → PERSONALIZED step.
"""

from __future__ import annotations

from gp.apdu import CommandAPDU
from gp.card.registry import descendants, has_authority
from gp.card.sd.common import (
    SW_CONDITIONS,
    SW_NOT_FOUND,
    SW_SECURITY,
    SW_WRONG_DATA,
    CardError,
    ChannelContext,
    _parse_error_sw,
    _require_auth,
)
from gp.card.state import (
    Application,
    CardState,
)
from gp.commands.status import SetStatus, SetStatusScope
from gp.commands.types import AID, CardLifeCycle, LifeCycle, Privileges
from gp.errors import ParseError

_CARD_TRANSITIONS: dict[CardLifeCycle, set[CardLifeCycle]] = {
    CardLifeCycle.OP_READY: {CardLifeCycle.INITIALIZED, CardLifeCycle.SECURED, CardLifeCycle.TERMINATED},
    CardLifeCycle.INITIALIZED: {CardLifeCycle.SECURED, CardLifeCycle.TERMINATED},
    CardLifeCycle.SECURED: {CardLifeCycle.CARD_LOCKED, CardLifeCycle.TERMINATED},
    CardLifeCycle.CARD_LOCKED: {CardLifeCycle.SECURED, CardLifeCycle.TERMINATED},
    CardLifeCycle.TERMINATED: set(),
}


def _set_status(state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU) -> bytes:
    _require_auth(ctx)
    if state.life_cycle is CardLifeCycle.TERMINATED:
        raise CardError(SW_CONDITIONS, "card terminated")
    try:
        ss = SetStatus.from_apdu(cmd)
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None
    if ss.scope is SetStatusScope.CARD:
        return _set_card_status(state, sd, ss)
    if state.life_cycle is CardLifeCycle.CARD_LOCKED:
        raise CardError(SW_CONDITIONS, "card locked")
    target = state.applications.get(AID(ss.aid))
    if target is None:
        raise CardError(SW_NOT_FOUND, "application not found")
    if target.aid == state.isd_aid:
        raise CardError(SW_WRONG_DATA, "the ISD's state is the card's: use P1 80")
    lock_request = bool(ss.state & 0x80)
    may_lock = sd.has(Privileges.GLOBAL_LOCK) or has_authority(state, sd, target.associated_sd)
    if ss.scope is SetStatusScope.SECURITY_DOMAIN_AND_APPLICATIONS:
        if not target.is_security_domain:
            raise CardError(SW_WRONG_DATA, "P1 60 needs a Security Domain")
        if ss.state not in (0x80, 0x00):
            raise CardError(SW_WRONG_DATA, "P1 60 only locks (80) or unlocks (00)")
        if not may_lock:
            raise CardError(SW_SECURITY, "no authority to lock this Security Domain")
        if target.life_cycle.locked == lock_request:
            raise CardError(SW_CONDITIONS, "already in the requested lock state")
        below, _ = descendants(state, target.aid)
        for a in [target, *below]:
            a.life_cycle = a.life_cycle.with_locked(lock_request)
        return b""
    if lock_request:
        if ss.state != 0x80 and ss.state & 0x7F != target.life_cycle.state:
            raise CardError(SW_WRONG_DATA, "lock coding must be 80 or the current state with b8")
        if not may_lock:
            raise CardError(SW_SECURITY, "no authority to lock this application")
        if target.life_cycle.locked:
            raise CardError(SW_CONDITIONS, "already locked")
        target.life_cycle = target.life_cycle.with_locked(True)
        return b""
    if target.life_cycle.locked:
        if ss.state not in (0x00, target.life_cycle.state):
            raise CardError(SW_WRONG_DATA, "unlock coding must be 00 or the state before locking")
        if not may_lock:
            raise CardError(SW_SECURITY, "no authority to unlock this application")
        target.life_cycle = target.life_cycle.with_locked(False)
        return b""
    if ss.state == 0x00:
        raise CardError(SW_CONDITIONS, "not locked")
    # a forward state transition; off-card only for Security Domains (SELECTABLE -> PERSONALIZED)
    if not target.is_security_domain:
        raise CardError(SW_WRONG_DATA, "application-specific states are set by the application")
    if ss.state != 0x0F:
        raise CardError(SW_WRONG_DATA, f"no Security Domain state {ss.state:02X}")
    if not (sd.aid == target.aid or has_authority(state, sd, target.associated_sd)):
        raise CardError(SW_SECURITY, "no authority over this Security Domain")
    if target.life_cycle.state != 0x07:
        raise CardError(SW_CONDITIONS, "Security Domain is not SELECTABLE")
    target.life_cycle = LifeCycle(0x0F)
    return b""


def _set_card_status(state: CardState, sd: Application, ss: SetStatus) -> bytes:
    if ss.aid and ss.aid != state.isd_aid:
        raise CardError(SW_WRONG_DATA, "card life cycle changes name the ISD")
    try:
        new = CardLifeCycle(ss.state)
    except ValueError:
        raise CardError(SW_WRONG_DATA, f"no card life cycle state {ss.state:02X}") from None
    current = state.life_cycle
    is_isd = sd.aid == state.isd_aid
    if new is CardLifeCycle.TERMINATED:
        allowed = is_isd or sd.has(Privileges.CARD_TERMINATE)
    elif new is CardLifeCycle.CARD_LOCKED or current is CardLifeCycle.CARD_LOCKED:
        allowed = is_isd or sd.has(Privileges.CARD_LOCK)
    else:
        allowed = is_isd
    if not allowed:
        raise CardError(SW_SECURITY, "missing privilege for this card life cycle transition")
    if new not in _CARD_TRANSITIONS[current]:
        raise CardError(SW_CONDITIONS, f"{current.name} -> {new.name} is not a valid transition")
    state.life_cycle = new
    return b""
