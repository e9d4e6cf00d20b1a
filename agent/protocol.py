"""Wire format v1 of ``POST /agent/v1/exchange`` (docs/agent-protocol.md), shared by agent and portal.

Every message type is a frozen dataclass that validates itself on construction, so an invalid
message can be neither built nor parsed; ``from_json`` additionally checks JSON types and refuses
unknown fields. Every refusal is a :class:`ProtocolError` whose message starts with the path of
the offending field (``work[2].commands[0].apdu: …``), ready to be returned in a 400 answer.

Bounds (a device and a web node must both survive a hostile peer):

- a body is at most ``MAX_BODY_BYTES``; at most ``MAX_ITEMS`` work items, results or acks per
  message and ``MAX_COMMANDS`` commands (or responses) per item;
- a C-APDU is 4..65544 bytes (extended case 4), an R-APDU 2..65538 bytes (data and SW);
- ids are 1..128 characters of ``[A-Za-z0-9._:~-]`` (opaque to the agent, safe to log);
- ``detail`` is at most 1000 characters; ``agent`` and ``health`` are flat objects of at most 32
  scalar members.

Stdlib only: the portal imports this module.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

from agent.errors import ProtocolError

__all__ = [
    "EXCHANGE_PATH",
    "KIND_APDU_SCRIPT",
    "KIND_TOKEN_OPS",
    "MAX_BODY_BYTES",
    "MAX_COMMANDS",
    "MAX_ITEMS",
    "MAX_WAIT",
    "PROTOCOL_VERSION",
    "STATUSES",
    "Command",
    "ExchangeRequest",
    "ExchangeResponse",
    "ProtocolError",
    "WorkItem",
    "WorkResult",
    "decode",
    "encode",
    "sw_matches",
]

PROTOCOL_VERSION = 1
MAX_BODY_BYTES = 256 * 1024
EXCHANGE_PATH = "/agent/v1/exchange"

KIND_APDU_SCRIPT = "apdu_script"
# A TEE's script: token operations, each in a Command's slot (agent/tokenops.py, docs/tee-bridge.md §8).
KIND_TOKEN_OPS = "token_ops"
STATUSES = frozenset({"completed", "failed", "interrupted", "rejected"})

MAX_ITEMS = 64
MAX_COMMANDS = 256
MAX_EXPECT = 16
MAX_CAPDU = 65544  # 4 header + 3 Lc + 65535 data + 2 Le
MAX_RAPDU = 65538  # 65536 data + SW1 SW2
MAX_DETAIL = 1000
MAX_ID = 128
MAX_KIND = 32
MAX_DEADLINE = 64
MAX_CHANNEL = 19  # ISO/IEC 7816-4 logical channels 0..19
MAX_POLL_AFTER = 86400.0
MAX_WAIT = 25.0  # longest an idle exchange may be held open for work (long poll)
MAX_INFO_MEMBERS = 32
MAX_INFO_KEY = 64
MAX_INFO_STRING = 256

_ID = re.compile(r"[A-Za-z0-9._:~-]{1,128}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_SW_PATTERN = re.compile(r"(?:[0-9a-f]{2}|xx){2}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_INFO_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")

Json = dict[str, Any]


# -- helpers -----------------------------------------------------------------------------------


def _fail(path: str, message: str) -> ProtocolError:
    error = ProtocolError(f"{path or 'body'}: {message}")
    error.field, error.reason = path, message
    return error


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _object(obj: object, path: str, required: Iterable[str], optional: Iterable[str] = ()) -> Json:
    if not isinstance(obj, dict):
        raise _fail(path, f"must be an object, got {_type_name(obj)}")
    required = tuple(required)
    allowed = set(required) | set(optional)
    for key in obj:
        if key not in allowed:
            raise _fail(_join(path, str(key)[:64]), "unknown field")
    for key in required:
        if key not in obj:
            raise _fail(_join(path, key), "missing")
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(value: object, path: str, *, max_len: int) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"must be a string, got {_type_name(value)}")
    if len(value) > max_len:
        raise _fail(path, f"longer than {max_len} characters")
    return value


def _id(value: object, path: str) -> str:
    text = _str(value, path, max_len=MAX_ID)
    if not _ID.fullmatch(text):
        raise _fail(path, "must be 1..128 characters of A-Z a-z 0-9 . _ : ~ -")
    return text


def _int(value: object, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be an integer, got {_type_name(value)}")
    if not lo <= value <= hi:
        raise _fail(path, f"must be in {lo}..{hi}")
    return value


def _list(value: object, path: str, *, max_len: int) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, f"must be an array, got {_type_name(value)}")
    if len(value) > max_len:
        raise _fail(path, f"more than {max_len} entries")
    return value


def _hex(value: object, path: str, *, min_len: int, max_len: int) -> bytes:
    text = _str(value, path, max_len=2 * max_len)
    if not _HEX.fullmatch(text):
        raise _fail(path, "must be an even number of hex digits")
    if len(text) < 2 * min_len:
        raise _fail(path, f"shorter than {min_len} bytes")
    return bytes.fromhex(text)


def _check_bytes(value: object, path: str, *, min_len: int, max_len: int) -> None:
    if not isinstance(value, bytes):
        raise _fail(path, f"must be bytes, got {type(value).__name__}")
    if not min_len <= len(value) <= max_len:
        raise _fail(path, f"must be {min_len}..{max_len} bytes, got {len(value)}")


def _info(value: object, path: str) -> dict[str, str | int | float | bool | None]:
    """A flat object of scalar members (``agent``, ``health``)."""
    if not isinstance(value, dict):
        raise _fail(path, f"must be an object, got {_type_name(value)}")
    if len(value) > MAX_INFO_MEMBERS:
        raise _fail(path, f"more than {MAX_INFO_MEMBERS} members")
    out: dict[str, str | int | float | bool | None] = {}
    for key, member in value.items():
        if not isinstance(key, str) or not _INFO_KEY.fullmatch(key):
            raise _fail(path, f"member name {str(key)[:64]!r} must match [a-z][a-z0-9_]{{0,63}}")
        where = _join(path, key)
        if isinstance(member, str):
            _str(member, where, max_len=MAX_INFO_STRING)
        elif isinstance(member, float):
            if not math.isfinite(member):
                raise _fail(where, "must be a finite number")
        elif isinstance(member, int) and not isinstance(member, bool):
            if not -(2**53) <= member <= 2**53:
                raise _fail(where, "integer out of range")
        elif not (member is None or isinstance(member, bool)):
            raise _fail(where, f"must be a string, number, boolean or null, got {_type_name(member)}")
        out[key] = member
    return out


def _check_protocol(obj: Json) -> None:
    version = obj["protocol"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise _fail("protocol", f"must be an integer, got {_type_name(version)}")
    if version != PROTOCOL_VERSION:
        raise _fail("protocol", f"unsupported version {version} (this side speaks {PROTOCOL_VERSION})")


def _prefixed(path: str, fn: Any, *args: Any) -> Any:
    """Run a nested ``from_json`` and prefix its error with the enclosing path."""
    try:
        return fn(*args)
    except ProtocolError as e:
        raise _fail(f"{path}.{e.field}" if e.field else path, e.reason or str(e)) from None


def sw_matches(sw: int, patterns: Iterable[str]) -> bool:
    """Whether status word ``sw`` matches one of ``patterns`` ("9000", "61xx"); none accepts anything."""
    hi, lo = (sw >> 8) & 0xFF, sw & 0xFF
    empty = True
    for pattern in patterns:
        empty = False
        p = pattern.lower()
        if (p[:2] == "xx" or int(p[:2], 16) == hi) and (p[2:] == "xx" or int(p[2:], 16) == lo):
            return True
    return empty


# -- message types -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """One C-APDU and the status words that let the script go on (``[]``: any)."""

    apdu: bytes
    expect: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_bytes(self.apdu, "apdu", min_len=4, max_len=MAX_CAPDU)
        if not isinstance(self.expect, tuple):
            object.__setattr__(self, "expect", tuple(self.expect))
        if len(self.expect) > MAX_EXPECT:
            raise _fail("expect", f"more than {MAX_EXPECT} entries")
        normalised = []
        for i, pattern in enumerate(self.expect):
            if not isinstance(pattern, str) or not _SW_PATTERN.fullmatch(pattern.lower()):
                raise _fail(
                    f"expect[{i}]", 'must be 4 hex digits, "xx" standing for any byte ("9000", "61xx")'
                )
            normalised.append(pattern.lower())
        object.__setattr__(self, "expect", tuple(normalised))

    def to_json(self) -> Json:
        return {"apdu": self.apdu.hex().upper(), "expect": list(self.expect)}

    @classmethod
    def from_json(cls, obj: object) -> Self:
        o = _object(obj, "", ("apdu", "expect"))
        apdu = _hex(o["apdu"], "apdu", min_len=4, max_len=MAX_CAPDU)
        expect = _list(o["expect"], "expect", max_len=MAX_EXPECT)
        for i, pattern in enumerate(expect):
            _str(pattern, f"expect[{i}]", max_len=4)
        return cls(apdu, tuple(expect))


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One script to run on the secure element, in order, stopping at the first unexpected SW."""

    item: str
    job: str
    kind: str
    channel: int
    commands: tuple[Command, ...]
    deadline: str | None = None

    def __post_init__(self) -> None:
        _id(self.item, "item")
        _id(self.job, "job")
        kind = _str(self.kind, "kind", max_len=MAX_KIND)
        if not _KIND.fullmatch(kind):
            raise _fail("kind", "must match [a-z][a-z0-9_]{0,31}")
        _int(self.channel, "channel", 0, MAX_CHANNEL)
        if not isinstance(self.commands, tuple):
            object.__setattr__(self, "commands", tuple(self.commands))
        if len(self.commands) > MAX_COMMANDS:
            raise _fail("commands", f"more than {MAX_COMMANDS} entries")
        for i, command in enumerate(self.commands):
            if not isinstance(command, Command):
                raise _fail(f"commands[{i}]", "must be a Command")
        if self.deadline is not None:
            text = _str(self.deadline, "deadline", max_len=MAX_DEADLINE)
            try:
                datetime.fromisoformat(text)
            except ValueError:
                raise _fail("deadline", "must be an ISO 8601 date-time") from None

    def deadline_timestamp(self) -> float | None:
        """The deadline as a Unix time (a naive deadline is read as UTC)."""
        if self.deadline is None:
            return None
        moment = datetime.fromisoformat(self.deadline)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()

    def to_json(self) -> Json:
        return {
            "item": self.item,
            "job": self.job,
            "kind": self.kind,
            "channel": self.channel,
            "commands": [c.to_json() for c in self.commands],
            "deadline": self.deadline,
        }

    @classmethod
    def from_json(cls, obj: object) -> Self:
        o = _object(obj, "", ("item", "job", "kind", "channel", "commands"), ("deadline",))
        item = _id(o["item"], "item")
        job = _id(o["job"], "job")
        kind = _str(o["kind"], "kind", max_len=MAX_KIND)
        channel = _int(o["channel"], "channel", 0, MAX_CHANNEL)
        raw = _list(o["commands"], "commands", max_len=MAX_COMMANDS)
        commands = tuple(_prefixed(f"commands[{i}]", Command.from_json, c) for i, c in enumerate(raw))
        deadline = o.get("deadline")
        if deadline is not None:
            _str(deadline, "deadline", max_len=MAX_DEADLINE)
        return cls(item, job, kind, channel, commands, deadline)


@dataclass(frozen=True, slots=True)
class WorkResult:
    """What became of one work item (docs/agent-protocol.md §Request body for the statuses)."""

    item: str
    status: str
    responses: tuple[bytes, ...] = ()
    detail: str = ""

    def __post_init__(self) -> None:
        _id(self.item, "item")
        if self.status not in STATUSES:
            raise _fail("status", f"must be one of {', '.join(sorted(STATUSES))}")
        if not isinstance(self.responses, tuple):
            object.__setattr__(self, "responses", tuple(self.responses))
        if len(self.responses) > MAX_COMMANDS:
            raise _fail("responses", f"more than {MAX_COMMANDS} entries")
        for i, rapdu in enumerate(self.responses):
            _check_bytes(rapdu, f"responses[{i}]", min_len=2, max_len=MAX_RAPDU)
        _str(self.detail, "detail", max_len=MAX_DETAIL)

    def to_json(self) -> Json:
        return {
            "item": self.item,
            "status": self.status,
            "responses": [r.hex().upper() for r in self.responses],
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, obj: object) -> Self:
        o = _object(obj, "", ("item", "status", "responses"), ("detail",))
        item = _id(o["item"], "item")
        status = _str(o["status"], "status", max_len=16)
        raw = _list(o["responses"], "responses", max_len=MAX_COMMANDS)
        responses = tuple(_hex(r, f"responses[{i}]", min_len=2, max_len=MAX_RAPDU) for i, r in enumerate(raw))
        detail = _str(o.get("detail", ""), "detail", max_len=MAX_DETAIL)
        return cls(item, status, responses, detail)


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """The agent's POST: who it is, what it finished, how it is doing."""

    agent: Mapping[str, Any] = field(default_factory=dict)
    results: tuple[WorkResult, ...] = ()
    health: Mapping[str, Any] = field(default_factory=dict)
    wait: float = 0.0  # seconds the agent lets the server hold this exchange until work appears

    def __post_init__(self) -> None:
        wait = self.wait
        if isinstance(wait, bool) or not isinstance(wait, int | float):
            raise _fail("wait", f"must be a number, got {_type_name(wait)}")
        if not (0 <= wait <= MAX_WAIT) or math.isnan(wait):
            raise _fail("wait", f"must be in 0..{MAX_WAIT:g} seconds")
        object.__setattr__(self, "wait", float(wait))
        for name in ("agent", "health"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise _fail(name, f"must be a mapping, got {type(value).__name__}")
            object.__setattr__(self, name, _info(dict(value), name))
        if not isinstance(self.results, tuple):
            object.__setattr__(self, "results", tuple(self.results))
        if len(self.results) > MAX_ITEMS:
            raise _fail("results", f"more than {MAX_ITEMS} entries")
        for i, result in enumerate(self.results):
            if not isinstance(result, WorkResult):
                raise _fail(f"results[{i}]", "must be a WorkResult")

    def to_json(self) -> Json:
        out: Json = {
            "protocol": PROTOCOL_VERSION,
            "agent": dict(self.agent),
            "results": [r.to_json() for r in self.results],
            "health": dict(self.health),
        }
        if self.wait:
            out["wait"] = self.wait
        return out

    @classmethod
    def from_json(cls, obj: object) -> Self:
        o = _object(obj, "", ("protocol", "agent", "results", "health"), ("wait",))
        _check_protocol(o)
        agent = _info(o["agent"], "agent")
        raw = _list(o["results"], "results", max_len=MAX_ITEMS)
        results = tuple(_prefixed(f"results[{i}]", WorkResult.from_json, r) for i, r in enumerate(raw))
        health = _info(o["health"], "health")
        return cls(agent, results, health, o.get("wait", 0.0))


@dataclass(frozen=True, slots=True)
class ExchangeResponse:
    """The portal's answer: results it recorded, the next work, when to poll again."""

    acks: tuple[str, ...] = ()
    work: tuple[WorkItem, ...] = ()
    poll_after: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.acks, tuple):
            object.__setattr__(self, "acks", tuple(self.acks))
        if not isinstance(self.work, tuple):
            object.__setattr__(self, "work", tuple(self.work))
        if len(self.acks) > MAX_ITEMS:
            raise _fail("acks", f"more than {MAX_ITEMS} entries")
        for i, ack in enumerate(self.acks):
            _id(ack, f"acks[{i}]")
        if len(self.work) > MAX_ITEMS:
            raise _fail("work", f"more than {MAX_ITEMS} entries")
        for i, item in enumerate(self.work):
            if not isinstance(item, WorkItem):
                raise _fail(f"work[{i}]", "must be a WorkItem")
        poll = self.poll_after
        if isinstance(poll, bool) or not isinstance(poll, int | float):
            raise _fail("poll_after", f"must be a number, got {_type_name(poll)}")
        if not (math.isfinite(poll) and 0 <= poll <= MAX_POLL_AFTER):
            raise _fail("poll_after", f"must be in 0..{MAX_POLL_AFTER:g} seconds")
        object.__setattr__(self, "poll_after", float(poll))

    def to_json(self) -> Json:
        return {
            "protocol": PROTOCOL_VERSION,
            "acks": list(self.acks),
            "work": [w.to_json() for w in self.work],
            "poll_after": self.poll_after,
        }

    @classmethod
    def from_json(cls, obj: object) -> Self:
        o = _object(obj, "", ("protocol", "acks", "work", "poll_after"))
        _check_protocol(o)
        acks = tuple(_id(a, f"acks[{i}]") for i, a in enumerate(_list(o["acks"], "acks", max_len=MAX_ITEMS)))
        raw = _list(o["work"], "work", max_len=MAX_ITEMS)
        work = tuple(_prefixed(f"work[{i}]", WorkItem.from_json, w) for i, w in enumerate(raw))
        return cls(acks, work, o["poll_after"])


# -- bytes <-> JSON ----------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _fail(key[:64], "duplicate member")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _fail("body", f"{name} is not JSON")


def encode(obj: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a message's ``to_json()``."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode(data: bytes, *, max_bytes: int | None = MAX_BODY_BYTES) -> Json:
    """Parse a JSON body strictly: UTF-8, no NaN/Infinity, no duplicate members, an object on top.

    ``max_bytes`` None lifts the size bound (a response carrying many large commands may exceed
    the request limit); everything else raises :class:`ProtocolError`.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise _fail("body", f"larger than {max_bytes} bytes")
    try:
        text = bytes(data).decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except ProtocolError:
        raise
    except UnicodeDecodeError:
        raise _fail("body", "is not UTF-8") from None
    except RecursionError:
        raise _fail("body", "nested too deeply") from None
    except ValueError as e:
        raise _fail("body", f"is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise _fail("body", f"must be a JSON object, got {_type_name(obj)}")
    return obj
