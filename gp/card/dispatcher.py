"""Command dispatch of the OPEN: logical channels, selection, secure channel sessions.

- Command dispatch and class byte checks: GP CS v2.3.1 §6.3, §11.1.4 (Tables 11-11, 11-12).
- Logical channels and application selection: GP CS v2.3.1 §6.4 (basic and supplementary
  channels; MANAGE CHANNEL per ISO/IEC 7816-4 §11.1.2; channels 0-19); SELECT §11.9 (partial
  AIDs and next occurrence; ``6283`` warning when the card is CARD_LOCKED; locked or INSTALLED
  applications are not selectable); the application with the Card Reset privilege (or the ISD) is
  selected on the basic channel after reset.
- Secure channel: one SCP03 session per logical channel (Amd D v1.2 §5), started by INITIALIZE
  UPDATE on the selected SD, ended by SELECT, MANAGE CHANNEL close, reset or a security error;
  once authenticated every command is checked against the session's security level (§5.6).
- SCP11 on the ISD (Amd F v1.4, :mod:`gp.card.casd`): PERFORM SECURITY OPERATION (``2A``, the only
  command accepted with ISO chaining in CLA), MUTUAL AUTHENTICATE (``82`` with P2 != 00) and
  INTERNAL AUTHENTICATE (``88``) open a session that then runs through the same secured path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from gp.apdu import _CHAINED, _CHANNEL, _SECURE_MESSAGING, CommandAPDU
from gp.card.casd import CASD_KIDS, CasdError, OcePending, perform_security_operation
from gp.card.sd import SW_OK, CardError, ChannelContext, process
from gp.card.state import Application, CardState
from gp.commands.get_data import CardRecognitionData
from gp.commands.select import FCI
from gp.commands.types import AID, CardLifeCycle, Privileges
from gp.errors import GPError, ParseError
from gp.scp03 import CardSession, SCP03Error
from gp.scp11 import INS_INTERNAL_AUTHENTICATE, INS_PSO, SCP11Error, card_authenticate

__all__ = ["Channel", "Dispatcher"]

MAX_CHANNELS = 20
_NONE_SELECTED: frozenset[AID] = frozenset()
SW_WARNING_LOCKED = 0x6283
SW_NOT_FOUND_APP = 0x6A82
SW_CHANNEL = 0x6881
SW_CHAINING = 0x6884
SW_CLA = 0x6E00
SW_INS = 0x6D00
SW_WRONG_LENGTH = 0x6700
SW_FUNCTION = 0x6A81
SW_P1P2 = 0x6A86
SW_CONDITIONS = 0x6985
SW_NOT_FOUND = 0x6A88
# Instructions the dispatcher routes itself before the SD's session sees them: MANAGE CHANNEL,
# SELECT, GET RESPONSE, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE (never on the fast path).
# PERFORM SECURITY OPERATION and INTERNAL AUTHENTICATE (SCP11) too.
_ROUTED = frozenset({0x70, 0xA4, 0xC0, 0x50, 0x82, 0x2A, 0x88})
_COUNTER_LIMIT = 0x1000000  # one past the largest 3-byte sequence counter


@dataclass
class Channel:
    number: int
    selected: AID | None = None
    session: CardSession | None = None
    ctx: ChannelContext = field(default_factory=ChannelContext)
    oce: OcePending | None = None  # SCP11 PERFORM SECURITY OPERATION progress (gp.card.casd)

    def end_session(self) -> None:
        self.session = None
        self.oce = None
        self.ctx.clear()
        self.ctx.decrypt = None
        self.ctx.authenticated = False
        self.ctx.oce_session = False
        self.ctx.session_dek = None


@functools.lru_cache(maxsize=256)
def _fci(aid: AID, i_param: int | None) -> bytes:
    """SELECT's FCI (GP CS v2.3.1 Table 11-91): a function of the AID and, for an SD, the i parameter."""
    if i_param is None:
        return FCI(aid).encode()
    sdm = CardRecognitionData(i_param=i_param).encode()[4:]  # the 73 template's value
    return FCI(aid, sdm, 255).encode()


def _sw(sw: int, data: bytes = b"") -> bytes:
    return data + sw.to_bytes(2, "big")


class Dispatcher:
    """Routes APDUs; holds the transient state (channels, sessions) of one powered-on card."""

    fast_path = True  # tests turn it off to compare the shortcut in process() with the general path

    def __init__(self, state: CardState, *, counter_reservation: int = 0) -> None:
        self.state = state
        self.channels: dict[int, Channel] = {}
        # Undo actions for the persistent changes a command makes outside the card content
        # management handlers (the sequence counter step of INITIALIZE UPDATE); the card replays
        # them, newest first, when the command fails or its write does, and clears the list.
        self.journal: list[Callable[[], None]] = []
        # Sequence counter values an INITIALIZE UPDATE reserves when it reaches the key set's
        # reservation (gp.card.softcard: persisted cards); 0: no reservation (in-memory cards).
        self.counter_reservation = counter_reservation
        # Set by a command whose journaled change must reach the disk before the card answers (a
        # raised reservation); the card clears it before each command.
        self.durable = False
        self.reset()

    # -- power / channels --

    def reset(self) -> None:
        """Power-on or warm reset: only the basic channel, default application selected, no sessions."""
        for ch in self.channels.values():
            ch.end_session()
        self.channels = {0: Channel(0, self._default_selected())}

    def _default_selected(self) -> AID | None:
        for app in self.state.applications.values():
            if app.aid != self.state.isd_aid and app.has(Privileges.CARD_RESET) and self._selectable(app):
                return app.aid
        return self.state.isd_aid

    def selected_aids(self, *, except_channel: int | None = None) -> set[AID]:
        return {
            c.selected for n, c in self.channels.items() if c.selected is not None and n != except_channel
        }

    def _selectable(self, app: Application) -> bool:
        if app.aid == self.state.isd_aid:
            return True  # even TERMINATED: GET DATA (CPLC, IIN, CIN) stays possible
        if self.state.life_cycle in (CardLifeCycle.CARD_LOCKED, CardLifeCycle.TERMINATED):
            return False
        return app.life_cycle.selectable

    # -- entry point --

    def process(self, raw: bytes) -> bytes:
        # Fast path: a short command with data (case 3 or 4), secure messaging in CLA, on a channel
        # whose SD has an authenticated session: what the general path below does for it, minus
        # the checks that cannot fail for it (parse, channel coding, extended length, chaining).
        n = len(raw)
        if n > 5 and self.fast_path:
            lc = raw[4]
            if lc and (n == 5 + lc or n == 6 + lc):
                cla = raw[0]
                ch = self.channels.get(_CHANNEL[cla])
                if ch is not None and _SECURE_MESSAGING[cla] and not _CHAINED[cla] and raw[1] not in _ROUTED:
                    session = ch.session
                    selected = ch.selected
                    if session is not None and session.authenticated and selected is not None:
                        sd = self.state.applications.get(selected)
                        if sd is not None and sd.is_security_domain:
                            le = (raw[-1] or 256) if n == 6 + lc else None
                            cmd = CommandAPDU._trusted(
                                cla, raw[1], raw[2], raw[3], raw[5 : 5 + lc], le, False
                            )
                            return self._secured(ch, session, sd, cmd)
        try:
            cmd = CommandAPDU.parse(raw)
        except ParseError:
            if len(raw) >= 1 and raw[0] == 0xFF:
                return _sw(SW_CLA)
            return _sw(SW_WRONG_LENGTH)
        try:
            number = cmd.channel
        except GPError:
            return _sw(SW_CLA)
        if cmd.uses_extended_length:
            return _sw(SW_WRONG_LENGTH)
        if cmd.is_chained and cmd.ins != INS_PSO:
            return _sw(SW_CHAINING)
        ch = self.channels.get(number)
        if ch is None:
            return _sw(SW_CHANNEL)
        if cmd.ins == 0x70:
            return self._manage_channel(ch, cmd)
        if cmd.ins == 0xA4:
            return self._select(ch, cmd)
        if cmd.ins == 0xC0 and not cmd.is_proprietary:
            return _sw(SW_CONDITIONS)  # responses always fit: nothing is ever pending
        if ch.selected is None:
            return _sw(SW_CONDITIONS)
        app = self.state.applications.get(ch.selected)
        if app is None:  # deleted while selected elsewhere cannot happen; stay defensive
            ch.selected = None
            return _sw(SW_CONDITIONS)
        if not app.is_security_domain:
            return _sw(SW_INS)  # no Java Card VM: applications answer nothing but SELECT
        return self._security_domain(ch, app, cmd, raw)

    # -- MANAGE CHANNEL / SELECT --

    def _manage_channel(self, ch: Channel, cmd: CommandAPDU) -> bytes:
        if cmd.is_proprietary or cmd.secure_messaging:
            return _sw(SW_CLA)
        if cmd.data or cmd.p1 not in (0x00, 0x80):
            return _sw(SW_P1P2 if cmd.p1 not in (0x00, 0x80) else SW_WRONG_LENGTH)
        if cmd.p1 == 0x80:
            target = self.channels.get(cmd.p2)
            if cmd.p2 == 0 or target is None:
                return _sw(SW_P1P2)
            target.end_session()
            del self.channels[cmd.p2]
            return _sw(SW_OK)
        if cmd.p2 == 0:
            free = [n for n in range(1, MAX_CHANNELS) if n not in self.channels]
            if not free:
                return _sw(SW_FUNCTION)
            number = free[0]
        else:
            number = cmd.p2
            if number >= MAX_CHANNELS or number in self.channels:
                return _sw(SW_P1P2)
        # ISO/IEC 7816-4: from the basic channel the default application, otherwise the origin's.
        selected = self._default_selected() if ch.number == 0 else ch.selected
        self.channels[number] = Channel(number, selected)
        return _sw(SW_OK, bytes([number]) if cmd.p2 == 0 else b"")

    def _select(self, ch: Channel, cmd: CommandAPDU) -> bytes:
        if cmd.is_proprietary or cmd.secure_messaging:
            return _sw(SW_CLA)
        if cmd.p1 != 0x04:
            return _sw(SW_P1P2)  # selection by name only (no file system)
        if cmd.p2 not in (0x00, 0x02):
            return _sw(SW_P1P2)
        if len(cmd.data) > 16:
            return _sw(SW_WRONG_LENGTH)
        # SELECT by name, first occurrence: the target and the answer depend on the state only
        # (registry order, life cycles, i parameter), memoised like GET STATUS (CardState.responses).
        key = (0xA4, cmd.data) if cmd.p2 == 0x00 else None
        memo = self.state.responses.get(key) if key is not None else None
        if memo is None:
            target = self._find(
                cmd.data or self.state.isd_aid, next_after=ch.selected if cmd.p2 == 0x02 else None
            )
            if target is None:
                return _sw(SW_NOT_FOUND_APP)
            fci = _fci(target.aid, self.state.i_param if target.is_security_domain else None)
            locked = self.state.life_cycle in (CardLifeCycle.CARD_LOCKED, CardLifeCycle.TERMINATED)
            memo = (target.aid, _sw(SW_WARNING_LOCKED if locked else SW_OK, fci))
            if key is not None:
                self.state.responses[key] = memo
        ch.end_session()
        ch.selected = memo[0]
        return memo[1]

    def _find(self, prefix: bytes, *, next_after: AID | None) -> Application | None:
        candidates = [
            a for a in self.state.applications.values() if a.aid.startswith(prefix) and self._selectable(a)
        ]
        if next_after is None:
            return candidates[0] if candidates else None
        aids = [a.aid for a in candidates]
        if next_after in aids:
            i = aids.index(next_after)
            return candidates[i + 1] if i + 1 < len(candidates) else None
        return candidates[0] if candidates else None

    # -- Security Domain: secure channel then command processing --

    def _security_domain(self, ch: Channel, sd: Application, cmd: CommandAPDU, raw: bytes) -> bytes:
        if cmd.ins == 0x50:
            return self._initialize_update(ch, sd, cmd)
        if cmd.ins == INS_PSO:
            return self._perform_security_operation(ch, sd, cmd)
        if cmd.ins == INS_INTERNAL_AUTHENTICATE or (cmd.ins == 0x82 and cmd.p2 != 0x00):
            return self._scp11_authenticate(ch, sd, cmd)
        if cmd.ins == 0x82:
            session = ch.session
            if session is None or session.authenticated or session.aborted:
                return _sw(SW_CONDITIONS)
            sw = session.external_authenticate(raw)
            if sw != SW_OK:
                ch.end_session()
                return _sw(sw)
            ch.ctx.authenticated = True
            ch.ctx.decrypt = session.decrypt_sensitive
            return _sw(sw)
        session = ch.session
        if session is not None and not session.authenticated:
            ch.end_session()  # anything but EXTERNAL AUTHENTICATE abandons the handshake
            session = None
        if session is not None:
            return self._secured(ch, session, sd, cmd)
        if cmd.secure_messaging:
            return _sw(0x6982)
        try:
            data, sw = self._run(ch, sd, cmd)
        except CardError as e:
            data, sw = b"", e.sw
        return _sw(sw, data)

    def _secured(self, ch: Channel, session: CardSession, sd: Application, cmd: CommandAPDU) -> bytes:
        """A command on an authenticated session: unwrap, run, wrap the response (Amd D §6.2.4-7)."""
        try:
            plain = session._unwrap(cmd)  # = parse(unwrap_command(raw)), without re-parsing
        except SCP03Error as e:
            ch.end_session()
            return _sw(e.sw or 0x6982)
        except GPError:
            return _sw(SW_WRONG_LENGTH)
        try:
            data, sw = self._run(ch, sd, plain)
        except CardError as e:
            data, sw = b"", e.sw
        return session.wrap_response(data, sw)

    def _run(self, ch: Channel, sd: Application, plain: CommandAPDU) -> tuple[bytes, int]:
        # Only DELETE consults the applications selected on other channels.
        selected = self.selected_aids(except_channel=ch.number) if plain.ins == 0xE4 else _NONE_SELECTED
        return process(self.state, ch.ctx, sd, plain, selected)

    # -- SCP11 (Amd F v1.4 §7.5-§7.7; gp.card.casd) --

    def _perform_security_operation(self, ch: Channel, sd: Application, cmd: CommandAPDU) -> bytes:
        """PERFORM SECURITY OPERATION; under an open session it is unwrapped and answered secured."""
        session = ch.session
        if cmd.secure_messaging:
            if session is None or not session.authenticated:
                return _sw(0x6982)
            try:
                plain = session._unwrap(cmd)
            except SCP03Error as e:
                ch.end_session()
                return _sw(e.sw or 0x6982)
            except GPError:
                return _sw(SW_WRONG_LENGTH)
            return session.wrap_response(b"", self._pso(ch, sd, plain))
        if session is not None and session.authenticated and session.security_level:
            # A plain command inside a secured session: a security error (Amd D §5.6).
            ch.end_session()
            return _sw(0x6982)
        return _sw(self._pso(ch, sd, cmd))

    def _pso(self, ch: Channel, sd: Application, cmd: CommandAPDU) -> int:
        if not cmd.is_proprietary:
            return SW_CLA
        if sd.aid != self.state.isd_aid or self.state.casd is None:
            return SW_NOT_FOUND
        if self.state.life_cycle is CardLifeCycle.TERMINATED:
            return SW_CONDITIONS
        pending = ch.oce if ch.oce is not None else OcePending()
        try:
            perform_security_operation(self.state, pending, cmd.p1, cmd.p2, cmd.data)
        except CasdError as e:
            ch.oce = None  # the whole chain has to be sent again
            return e.sw
        ch.oce = pending
        return SW_OK

    def _scp11_authenticate(self, ch: Channel, sd: Application, cmd: CommandAPDU) -> bytes:
        """MUTUAL / INTERNAL AUTHENTICATE: ends any session on the channel, maybe opens an SCP11 one."""
        pending = ch.oce
        ch.end_session()  # Amd F §7.6.1 / §7.7.1: terminates the ongoing session in any case
        if not cmd.is_proprietary or cmd.secure_messaging:
            return _sw(SW_CLA)
        casd = self.state.casd
        if sd.aid != self.state.isd_aid or casd is None:
            return _sw(SW_NOT_FOUND)
        if self.state.life_cycle is CardLifeCycle.TERMINATED:
            return _sw(SW_CONDITIONS)
        kvn, kid = cmd.p1 & 0x7F, cmd.p2 & 0x7F
        if kvn != casd.kvn or kid not in CASD_KIDS:
            return _sw(SW_NOT_FOUND)
        oce_key = pending.oce_key if pending is not None else None
        try:
            session, data = card_authenticate(
                cmd.ins,
                cmd.data,
                sd_private_key=casd.private_key(),
                oce_public_key=oce_key,
                oce_subject=pending.oce_subject if pending is not None else b"",
            )
        except SCP11Error as e:
            return _sw(e.sw or SW_CONDITIONS)
        if {"a": 0x11, "b": 0x13, "c": 0x15}[session.variant] != kid:
            return _sw(SW_NOT_FOUND)
        ch.session = session
        ch.ctx.authenticated = True
        ch.ctx.decrypt = session.decrypt_sensitive
        if session.variant in ("a", "c"):
            # An off-card entity proved by its certificate chain: a provider's session, restricted
            # to delivering a key set to an SSD (gp.card.sd.entry, gp.keydelivery).
            ch.ctx.oce_session = True
            ch.ctx.session_dek = session._static.dek
        return _sw(SW_OK, data)

    def _initialize_update(self, ch: Channel, sd: Application, cmd: CommandAPDU) -> bytes:
        ch.end_session()
        if not cmd.is_proprietary or cmd.secure_messaging:
            return _sw(SW_CLA)
        if self.state.life_cycle is CardLifeCycle.TERMINATED:
            return _sw(SW_CONDITIONS)
        if cmd.p2 != 0x00:
            return _sw(SW_P1P2)
        if len(cmd.data) not in (8, 16):
            return _sw(SW_WRONG_LENGTH)
        kvn = cmd.p1 or sd.keys.default_scp03_kvn()
        keyset = sd.keys.sets.get(kvn) if kvn is not None else None
        keys = keyset.scp03() if keyset is not None else None
        if keyset is None or keys is None:
            return _sw(SW_NOT_FOUND)
        counter = keyset.sequence_counter
        if counter > 0xFFFFFF:
            return _sw(SW_CONDITIONS)
        diversification = (self.state.cplc[13:17] + self.state.cin)[:10].ljust(10, b"\x00")
        try:
            session, data = CardSession.begin(
                keys,
                host_challenge=cmd.data,
                key_version=keyset.kvn,
                i_param=self.state.i_param,
                sequence_counter=counter,
                aid=sd.aid,
                diversification_data=diversification,
            )
        except SCP03Error as e:
            return _sw(e.sw or SW_CONDITIONS)
        except GPError:
            return _sw(0x6F00)
        keyset.sequence_counter = counter + 1
        reserved = keyset.reserved_until
        if self.counter_reservation and counter >= reserved:
            # The value about to be used is not covered by the reservation on disk: raise it
            # first; the card writes it before answering (gp.card.softcard).
            keyset.reserved_until = min(counter + self.counter_reservation, _COUNTER_LIMIT)
            self.durable = True

        def undo() -> None:
            keyset.sequence_counter = counter
            keyset.reserved_until = reserved

        self.journal.append(undo)
        ch.session = session
        return _sw(SW_OK, data)
