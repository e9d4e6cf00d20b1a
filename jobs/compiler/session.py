"""SCP03 sessions for compiled job scripts: precomputed and interactive (GP Card Spec v2.3.1 + Amendment D v1.2).

A job step becomes one :class:`Script` of C-APDUs that the device agent relays to the card
(docs/agent-protocol.md).  Every script opens a fresh Secure Channel Session on one Security
Domain: SELECT by AID (GPCS v2.3.1 §11.9), INITIALIZE UPDATE (GPCS §11.12, Amd D §7.1.1) and
EXTERNAL AUTHENTICATE (Amd D §7.1.2), then the job's *payload* commands wrapped at the plan's
security level (C-MAC §6.2.4, C-DECRYPTION §6.2.6; responses with R-MAC §6.2.5 and R-ENC §6.2.7).

Two modes (DESIGN §7):

- **precomputed** — for sleeping devices.  With the pseudo-random card challenge of Amd D §6.2.2.1
  (i parameter b5, :data:`gp.scp03.I_PSEUDO_RANDOM`) the card challenge is
  ``KDF(Key-ENC, '02', sequence counter || SD AID)``: knowing the static keys, the key set's
  sequence counter and the SD AID, the host predicts the INITIALIZE UPDATE response (card
  challenge and card cryptogram, §6.2.2.2) and computes EXTERNAL AUTHENTICATE (host cryptogram,
  §6.2.2.3) and every wrapped command in advance.  A wrong counter makes the card compute another
  challenge; it then refuses EXTERNAL AUTHENTICATE (``6300``) and the agent stops there, since
  EXTERNAL AUTHENTICATE expects ``9000``.  :func:`unwrap_responses` then raises
  :class:`CounterMismatch` with the counter the card actually used.
- **interactive** — for online devices: :func:`interactive_open` sends SELECT + INITIALIZE UPDATE;
  with the card's answer :func:`interactive_continue` checks the card cryptogram (raising
  :class:`CardAuthError` when the card does not hold the keys we think) and builds EXTERNAL
  AUTHENTICATE + the wrapped payload.

Nothing secret is stored between the steps: a :class:`SessionPlan` (JSON, no keys) plus the static
keys re-create the host session deterministically, so :func:`unwrap_responses` replays the wraps
and verifies / decrypts every response.  The MAC chaining value advances with every command the
card verified, whatever status word it answered (Amd D §6.2.3, handled by :mod:`gp.scp03`); error
status words carry no R-MAC (§6.2.5).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Literal

from gp.apdu import CommandAPDU, ResponseAPDU
from gp.commands import AID, InitializeUpdate, InitializeUpdateResponse, Select
from gp.errors import GPError
from gp.scp03 import (
    I_PSEUDO_RANDOM,
    I_S16,
    VALID_SECURITY_LEVELS,
    HostSession,
    SCP03Error,
    StaticKeys,
    kdf,
    pseudo_random_card_challenge,
)

__all__ = [
    "INITIAL_SEQUENCE_COUNTER",
    "CardAuthError",
    "CommandResult",
    "CompilerError",
    "CounterMismatch",
    "PayloadCommand",
    "Script",
    "ScriptCommand",
    "ScriptError",
    "ScriptOutcome",
    "SessionPlan",
    "interactive_continue",
    "interactive_open",
    "new_plan",
    "precomputed_script",
    "sw_matches",
    "unwrap_responses",
]

# The sequence counter a key set starts with after PUT KEY (what gp.card uses for its first
# INITIALIZE UPDATE; Amd D §6.2.2.1 leaves the initial value to the implementation).
INITIAL_SEQUENCE_COUNTER = 1

Mode = Literal["precomputed", "interactive"]
_MODES = ("precomputed", "interactive")
_SELECT_EXPECT = ("9000", "6283")  # 6283: card locked, the ISD is still selectable (GPCS §11.9.3)
_OK = ("9000",)
_MAX_COUNTER = 0xFFFFFF

# Derivation constants, Amd D Table 4-1.
_DC_CARD_CRYPTOGRAM = 0x00
_DC_S_MAC = 0x06


class CompilerError(GPError):
    """Base class of the compiler's errors."""


class ScriptError(CompilerError):
    """The responses do not belong to this script (wrong R-MAC, malformed, more than commands)."""


class CardAuthError(CompilerError):
    """The card cryptogram does not match: the card does not hold the keys we think (Amd D §6.2.2.2)."""


class CounterMismatch(CompilerError):
    """A precomputed script met a card whose sequence counter differs from the plan's.

    ``actual_counter`` is the counter the card used for this INITIALIZE UPDATE;
    ``next_sequence_counter`` (= actual + 1) is the one to precompute the retry with.  Nothing
    beyond EXTERNAL AUTHENTICATE ran: the card refused it.
    """

    def __init__(self, actual_counter: int, *, expected: int | None) -> None:
        super().__init__(
            f"card sequence counter is {actual_counter:#08x}, the plan assumed "
            f"{'none' if expected is None else f'{expected:#08x}'}"
        )
        self.actual_counter = actual_counter
        self.expected = expected
        self.next_sequence_counter = actual_counter + 1


# --- data types ------------------------------------------------------------------------------


def _check_expect(expect: tuple[str, ...]) -> tuple[str, ...]:
    out = tuple(str(e).upper() for e in expect)
    for e in out:
        if len(e) != 4 or any(c not in "0123456789ABCDEFX" for c in e):
            raise CompilerError(f"expected status word {e!r} is not 4 hex digits ('xx' = any byte)")
    return out


def sw_matches(sw: int, expect: tuple[str, ...]) -> bool:
    """The agent's rule (docs/agent-protocol.md): ``xx`` matches any byte, an empty list anything."""
    if not expect:
        return True
    text = f"{sw:04X}"
    return any(all(p in ("X", c) for p, c in zip(e.upper(), text, strict=True)) for e in expect)


@dataclass(frozen=True, slots=True)
class PayloadCommand:
    """One plain (unwrapped) command of a job step and the status words that let the script go on."""

    apdu: bytes
    expect: tuple[str, ...] = _OK
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "apdu", bytes(self.apdu))
        object.__setattr__(self, "expect", _check_expect(tuple(self.expect)))

    @property
    def ins(self) -> int:
        return self.apdu[1]


@dataclass(frozen=True, slots=True)
class ScriptCommand:
    """One C-APDU as sent to the card (wrapped when inside the session)."""

    apdu: bytes
    expect: tuple[str, ...]
    label: str

    def to_wire(self) -> dict[str, object]:
        """The ``commands[]`` item of the agent protocol's work item."""
        return {"apdu": self.apdu.hex().upper(), "expect": list(self.expect)}


@dataclass
class Script:
    """The commands of one script; the first ``n_setup`` open the session, the rest are the payload."""

    commands: list[ScriptCommand]
    n_setup: int

    def to_wire(self) -> list[dict[str, object]]:
        return [c.to_wire() for c in self.commands]

    def __len__(self) -> int:
        return len(self.commands)


@dataclass(frozen=True)
class SessionPlan:
    """Everything but the keys needed to (re-)create one host session.  JSON-serialisable, no secrets.

    ``i_param`` is the card's SCP03 "i" parameter (Amd D Table 5-1; SoftCard: ``70``);
    ``sequence_counter`` is the key set's counter the next INITIALIZE UPDATE will use (required in
    precomputed mode, informative otherwise); ``kvn`` the key version to ask for (0 = the card's
    default key set — precomputed plans should name it).
    """

    sd_aid: str
    kvn: int
    i_param: int
    host_challenge: str
    sequence_counter: int | None = None
    mode: Mode = "precomputed"
    security_level: int = 0x33
    channel: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sd_aid", AID(self.sd_aid).hex().upper())
        object.__setattr__(self, "host_challenge", bytes.fromhex(self.host_challenge).hex().upper())
        n = 16 if self.i_param & I_S16 else 8
        if len(self.host_challenge) != 2 * n:
            raise CompilerError(f"host challenge must be {n} bytes for i parameter {self.i_param:#04x}")
        if not 0 <= self.kvn <= 0xFF:
            raise CompilerError("key version must be one byte")
        if not 0 <= self.i_param <= 0xFF:
            raise CompilerError("i parameter must be one byte")
        if self.security_level not in VALID_SECURITY_LEVELS:
            raise CompilerError(f"security level {self.security_level:#04x} is not valid (Amd D Table 7-6)")
        if self.mode not in _MODES:
            raise CompilerError(f"mode {self.mode!r} is not one of {_MODES}")
        if self.sequence_counter is not None and not 0 <= self.sequence_counter <= _MAX_COUNTER:
            raise CompilerError("sequence counter must fit in 3 bytes")
        if self.mode == "precomputed":
            if not self.i_param & I_PSEUDO_RANDOM:
                raise CompilerError("precomputed scripts need the pseudo-random card challenge (i b5)")
            if self.sequence_counter is None:
                raise CompilerError("precomputed scripts need the card's sequence counter")
        if self.channel != 0:
            raise CompilerError("only the basic logical channel (0) is supported")

    @property
    def aid(self) -> AID:
        return AID(self.sd_aid)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes | dict[str, object]) -> SessionPlan:
        data = text if isinstance(text, dict) else json.loads(text)
        if not isinstance(data, dict):
            raise CompilerError("a session plan is a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        extra = set(data) - known
        if extra:
            raise CompilerError(f"unknown session plan fields {sorted(extra)}")
        try:
            return cls(**data)  # type: ignore[arg-type]
        except (TypeError, ValueError) as e:
            raise CompilerError(f"malformed session plan: {e}") from None


def new_plan(
    *,
    sd_aid: bytes | str,
    kvn: int,
    i_param: int,
    sequence_counter: int | None,
    mode: Mode,
    security_level: int = 0x33,
) -> SessionPlan:
    """A plan with a fresh random host challenge (8 bytes; 16 in S16 mode)."""
    aid = AID(sd_aid)
    n = 16 if i_param & I_S16 else 8
    return SessionPlan(
        sd_aid=aid.hex().upper(),
        kvn=kvn,
        i_param=i_param,
        host_challenge=os.urandom(n).hex().upper(),
        sequence_counter=sequence_counter,
        mode=mode,
        security_level=security_level,
    )


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A payload command and the card's answer to it, unwrapped (plain data + SW)."""

    command: PayloadCommand
    response: ResponseAPDU

    @property
    def sw(self) -> int:
        return self.response.sw

    @property
    def expected(self) -> bool:
        return sw_matches(self.response.sw, self.command.expect)


@dataclass
class ScriptOutcome:
    """What a script did, from the responses the agent reported.

    ``results`` holds one entry per payload command that got an answer (in order); ``ran`` is
    their number; ``completed`` is True when every payload command answered an expected status
    word.  ``setup_sw`` are the status words of the session-opening commands that answered;
    ``failed_label`` / ``failed_sw`` name the command that stopped the script, if any.
    ``next_sequence_counter`` is the key set's counter after this session (for the next
    precomputed plan); ``None`` when unknown.
    """

    plan: SessionPlan
    results: list[CommandResult]
    completed: bool
    setup_sw: list[int]
    next_sequence_counter: int | None
    failed_label: str | None = None
    failed_sw: int | None = None
    card_info: InitializeUpdateResponse | None = field(default=None, repr=False)

    @property
    def ran(self) -> int:
        return len(self.results)

    @property
    def responses(self) -> list[ResponseAPDU]:
        return [r.response for r in self.results]


# --- host session helpers --------------------------------------------------------------------


def _host(keys: StaticKeys, plan: SessionPlan) -> HostSession:
    return HostSession(
        keys,
        security_level=plan.security_level,
        host_challenge=bytes.fromhex(plan.host_challenge),
        key_version=plan.kvn,
    )


def predicted_iu_response(keys: StaticKeys, plan: SessionPlan) -> bytes:
    """The INITIALIZE UPDATE response data a card with these keys and counter gives (Amd D Table 7-2).

    Key diversification data (10 bytes) cannot be predicted and is left zero: the host does not use
    it.  Card challenge per §6.2.2.1, card cryptogram per §6.2.2.2.
    """
    if plan.sequence_counter is None:
        raise CompilerError("predicting the card challenge needs the sequence counter")
    s16 = bool(plan.i_param & I_S16)
    n = 16 if s16 else 8
    challenge = pseudo_random_card_challenge(keys.enc, plan.sequence_counter, plan.aid, s16=s16)
    context = bytes.fromhex(plan.host_challenge) + challenge
    s_mac = kdf(keys.mac, _DC_S_MAC, context, 8 * keys.key_length)
    cryptogram = kdf(s_mac, _DC_CARD_CRYPTOGRAM, context, 8 * n)
    return (
        bytes(10)
        + bytes((plan.kvn, 0x03, plan.i_param))
        + challenge
        + cryptogram
        + plan.sequence_counter.to_bytes(3, "big")
    )


def _plain_command(apdu: bytes, channel: int) -> bytes:
    if channel == 0:
        return apdu
    return CommandAPDU.parse(apdu).with_channel(channel).encode()


def _setup_commands(plan: SessionPlan) -> list[ScriptCommand]:
    iu = InitializeUpdate(bytes.fromhex(plan.host_challenge), plan.kvn)
    return [
        ScriptCommand(Select(plan.aid).to_apdu(channel=plan.channel).encode(), _SELECT_EXPECT, "SELECT SD"),
        ScriptCommand(iu.to_apdu(channel=plan.channel).encode(), _OK, "INITIALIZE UPDATE"),
    ]


def _authenticate(host: HostSession, iu_data: bytes) -> bytes:
    try:
        return host.external_authenticate(iu_data)
    except SCP03Error as e:
        raise CardAuthError(str(e)) from None


def _wrapped_payload(host: HostSession, payload: list[PayloadCommand], channel: int) -> list[ScriptCommand]:
    return [ScriptCommand(host.wrap(_plain_command(p.apdu, channel)), p.expect, p.label) for p in payload]


# --- compiling -------------------------------------------------------------------------------


def precomputed_script(*, keys: StaticKeys, plan: SessionPlan, payload: list[PayloadCommand]) -> Script:
    """SELECT, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE and the wrapped payload, all in advance."""
    if plan.mode != "precomputed":
        raise CompilerError("precomputed_script needs a precomputed plan")
    host = _host(keys, plan)
    commands = _setup_commands(plan)
    ea = _authenticate(host, predicted_iu_response(keys, plan))
    commands.append(ScriptCommand(ea, _OK, "EXTERNAL AUTHENTICATE"))
    commands += _wrapped_payload(host, payload, plan.channel)
    return Script(commands, 3)


def interactive_open(*, plan: SessionPlan) -> Script:
    """SELECT the SD and INITIALIZE UPDATE; the card's answer goes to :func:`interactive_continue`."""
    if plan.mode != "interactive":
        raise CompilerError("interactive_open needs an interactive plan")
    return Script(_setup_commands(plan), 2)


def _iu_data(iu_response: bytes) -> bytes:
    """INITIALIZE UPDATE response data from the full R-APDU (``... 9000``) the agent reports."""
    rsp = ResponseAPDU.parse(iu_response)
    if rsp.sw != 0x9000:
        raise ScriptError(f"INITIALIZE UPDATE answered {rsp.sw:04X}; no session to continue")
    return rsp.data


def interactive_continue(
    *, keys: StaticKeys, plan: SessionPlan, iu_response: bytes, payload: list[PayloadCommand]
) -> Script:
    """EXTERNAL AUTHENTICATE and the wrapped payload, after checking the card cryptogram.

    ``iu_response`` is the card's full answer to INITIALIZE UPDATE, status word included.
    Raises :class:`CardAuthError` when the card cryptogram is wrong (Amd D §6.2.2.2).
    """
    if plan.mode != "interactive":
        raise CompilerError("interactive_continue needs an interactive plan")
    host = _host(keys, plan)
    ea = _authenticate(host, _iu_data(iu_response))
    commands = [ScriptCommand(ea, _OK, "EXTERNAL AUTHENTICATE")]
    commands += _wrapped_payload(host, payload, plan.channel)
    return Script(commands, 1)


# --- reading the answers ---------------------------------------------------------------------


def _parse_responses(responses: list[bytes]) -> list[ResponseAPDU]:
    out = []
    for i, raw in enumerate(responses):
        try:
            out.append(ResponseAPDU.parse(bytes(raw)))
        except GPError as e:
            raise ScriptError(f"response {i} is malformed: {e}") from None
    return out


def unwrap_responses(
    *,
    keys: StaticKeys,
    plan: SessionPlan,
    payload: list[PayloadCommand],
    responses: list[bytes],
    iu_response: bytes | None = None,
) -> ScriptOutcome:
    """Re-create the host session, replay the wraps and unwrap every response the agent reported.

    ``responses`` are full R-APDUs (data + SW) in command order, possibly fewer than the commands
    (failed or interrupted scripts).  Precomputed: they start with SELECT's answer; the card's
    INITIALIZE UPDATE answer is compared with the prediction (:class:`CounterMismatch` when the
    counter differs, :class:`CardAuthError` when the keys do).  Interactive: they start with
    EXTERNAL AUTHENTICATE's answer and ``iu_response`` is required.  A wrong R-MAC or undecryptable
    data raises :class:`ScriptError`.
    """
    rsps = _parse_responses(responses)
    host = _host(keys, plan)
    setup_sw: list[int] = []
    card_info: InitializeUpdateResponse | None = None
    next_counter = plan.sequence_counter

    def stopped(label: str, sw: int) -> ScriptOutcome:
        return ScriptOutcome(plan, [], False, setup_sw, next_counter, label, sw, card_info)

    if plan.mode == "precomputed":
        n_setup = 3
        if len(rsps) > n_setup + len(payload):
            raise ScriptError(f"{len(rsps)} responses for {n_setup + len(payload)} commands")
        if not rsps:
            return _interrupted(plan, next_counter)
        setup_sw.append(rsps[0].sw)
        if not sw_matches(rsps[0].sw, _SELECT_EXPECT):
            return stopped("SELECT SD", rsps[0].sw)
        if len(rsps) < 2:
            return _interrupted(plan, next_counter, setup_sw)
        iu = rsps[1]
        setup_sw.append(iu.sw)
        if iu.sw != 0x9000:
            return stopped("INITIALIZE UPDATE", iu.sw)
        card_info = _check_prediction(keys, plan, iu.data)
        next_counter = (plan.sequence_counter or 0) + 1
        ea_data = predicted_iu_response(keys, plan)
        rest = rsps[2:]
    else:
        n_setup = 1
        if iu_response is None:
            raise CompilerError("interactive outcomes need the card's INITIALIZE UPDATE response")
        if len(rsps) > n_setup + len(payload):
            raise ScriptError(f"{len(rsps)} responses for {n_setup + len(payload)} commands")
        ea_data = _iu_data(iu_response)
        try:
            card_info = InitializeUpdateResponse.parse(ea_data)
        except GPError as e:
            raise ScriptError(f"INITIALIZE UPDATE response: {e}") from None
        if card_info.sequence_counter is not None:
            next_counter = card_info.sequence_counter + 1
        rest = rsps

    _authenticate(host, ea_data)  # also re-checks the card cryptogram
    if not rest:
        return _interrupted(plan, next_counter, setup_sw, card_info)
    ea = rest[0]
    setup_sw.append(ea.sw)
    if ea.sw != 0x9000:
        return stopped("EXTERNAL AUTHENTICATE", ea.sw)

    results: list[CommandResult] = []
    for p, rsp in zip(payload, rest[1:], strict=False):
        host.wrap(_plain_command(p.apdu, plan.channel))
        try:
            plain = ResponseAPDU.parse(host.unwrap(rsp.encode()))
        except SCP03Error as e:
            raise ScriptError(f"response to {p.label or 'payload command'} #{len(results)}: {e}") from None
        results.append(CommandResult(p, plain))
        if not sw_matches(plain.sw, p.expect):
            return ScriptOutcome(plan, results, False, setup_sw, next_counter, p.label, plain.sw, card_info)
    completed = len(results) == len(payload)
    return ScriptOutcome(plan, results, completed, setup_sw, next_counter, None, None, card_info)


def _interrupted(
    plan: SessionPlan,
    next_counter: int | None,
    setup_sw: list[int] | None = None,
    card_info: InitializeUpdateResponse | None = None,
) -> ScriptOutcome:
    """An outcome for a script whose answers end before a failing command (interrupted)."""
    return ScriptOutcome(plan, [], False, list(setup_sw or []), next_counter, None, None, card_info)


def _check_prediction(keys: StaticKeys, plan: SessionPlan, data: bytes) -> InitializeUpdateResponse:
    """Compare the card's INITIALIZE UPDATE answer with the precomputed one (all but the KDD)."""
    try:
        actual = InitializeUpdateResponse.parse(data)
    except GPError as e:
        raise ScriptError(f"INITIALIZE UPDATE response: {e}") from None
    predicted = InitializeUpdateResponse.parse(predicted_iu_response(keys, plan))
    if actual.sequence_counter is None or actual.i_param != plan.i_param:
        raise CardAuthError(
            f"card answered with i parameter {actual.i_param:#04x}, plan has {plan.i_param:#04x}"
        )
    if plan.kvn and actual.key_version != plan.kvn:
        raise CardAuthError(f"card used key version {actual.key_version:#04x}, plan has {plan.kvn:#04x}")
    if actual.sequence_counter != plan.sequence_counter:
        # Check the keys too before blaming the counter: the card cryptogram must verify.
        probe = HostSession(
            keys,
            security_level=plan.security_level,
            host_challenge=bytes.fromhex(plan.host_challenge),
            key_version=plan.kvn,
        )
        _authenticate(probe, data)
        raise CounterMismatch(actual.sequence_counter, expected=plan.sequence_counter)
    if (actual.card_challenge, actual.card_cryptogram) != (
        predicted.card_challenge,
        predicted.card_cryptogram,
    ):
        raise CardAuthError("card challenge / cryptogram differ from the prediction: wrong static keys")
    return actual
