"""A demo meter application on the gateway: readings authenticated with today's session key.

The meter asks the agent's local API (:mod:`agent.localapi`) for the session key of its service and
today's epoch (days since 1970-01-01 UTC), and tags each reading with AES-CMAC under that key. The
provider's back end derives the same key from its master key (:mod:`gp.sessionkeys`, through the
portal's ``session-keys`` API or the provider SDK) and checks the tag: a reading from another SE,
another day or with any byte changed is refused. The meter never holds the master key.

    python -m agent.demo_meter --socket /run/tessera/agent.sock --sd A000000151535001 --wh 1234

prints one signed reading as JSON: ``{"reading": {"meter", "seq", "epoch", "wh"}, "tag": hex}``.
"""

from __future__ import annotations

import argparse
import hmac
import http.client
import json
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from gp.sessionkeys import day_epoch, derive_session_key

__all__ = [
    "Reading",
    "ReadingRejected",
    "SessionKeyUnavailable",
    "local_session_key",
    "provider_verify",
    "sign_reading",
    "verify_reading",
]

SERVICE = "meter.reading"
_DOMAIN = b"tessera-meter-reading\x00"  # the tag covers this prefix and the canonical JSON


class SessionKeyUnavailable(Exception):
    """The local API refused or could not be reached; ``code`` is its error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ReadingRejected(Exception):
    """A signed reading the provider does not accept."""


@dataclass(frozen=True, slots=True)
class Reading:
    meter: str
    seq: int
    epoch: int
    wh: int

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def local_session_key(socket_path: str, *, sd: str, service: str, epoch: int, timeout: float = 10.0) -> bytes:
    """POST /session-key on the agent's local API; SessionKeyUnavailable on any refusal."""
    conn = _UnixConnection(socket_path, timeout)
    try:
        body = json.dumps({"sd": sd, "service": service, "epoch": epoch})
        conn.request("POST", "/session-key", body=body, headers={"Content-Type": "application/json"})
        rsp = conn.getresponse()
        data = json.loads(rsp.read() or b"{}")
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise SessionKeyUnavailable("unreachable", f"local API at {socket_path}: {e}") from None
    finally:
        conn.close()
    if rsp.status != 200:
        err = data.get("error", {}) if isinstance(data, dict) else {}
        raise SessionKeyUnavailable(str(err.get("code", rsp.status)), str(err.get("message", "")))
    try:
        return bytes.fromhex(data["key"])
    except (KeyError, TypeError, ValueError):
        raise SessionKeyUnavailable("bad_response", "the local API answered no key") from None


def _tag(key: bytes, reading: Reading) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(_DOMAIN + reading.canonical())
    return c.finalize()


def sign_reading(key: bytes, reading: Reading) -> dict[str, Any]:
    return {"reading": asdict(reading), "tag": _tag(key, reading).hex()}


def verify_reading(key: bytes, signed: object) -> Reading:
    """The reading if its tag is right under ``key``; ReadingRejected otherwise."""
    try:
        if not isinstance(signed, dict) or set(signed) != {"reading", "tag"}:
            raise ValueError
        r = signed["reading"]
        if (
            not isinstance(r, dict)
            or set(r) != {"meter", "seq", "epoch", "wh"}
            or not isinstance(r["meter"], str)
        ):
            raise ValueError
        if any(not isinstance(r[k], int) or isinstance(r[k], bool) for k in ("seq", "epoch", "wh")):
            raise ValueError
        reading = Reading(r["meter"], r["seq"], r["epoch"], r["wh"])
        tag = bytes.fromhex(signed["tag"])
    except (TypeError, ValueError):
        raise ReadingRejected("malformed signed reading") from None
    if not hmac.compare_digest(tag, _tag(key, reading)):
        raise ReadingRejected("the tag does not verify (wrong key, day or content)")
    return reading


def provider_verify(
    master_key: bytes, *, se_id: bytes, signed: object, service: str = SERVICE, today: int | None = None
) -> Reading:
    """The provider's side: today's key from its master key, then the tag; ReadingRejected if not."""
    epoch = day_epoch() if today is None else today
    key = derive_session_key(master_key, service=service, epoch=epoch, se_id=se_id)
    reading = verify_reading(key, signed)
    if reading.epoch != epoch:
        raise ReadingRejected(f"reading of epoch {reading.epoch}, expected {epoch}")
    return reading


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.demo_meter", description=__doc__.split("\n")[0])
    p.add_argument("--socket", required=True, help="the agent's local API socket")
    p.add_argument("--sd", required=True, help="AID of the provider's security domain (hex)")
    p.add_argument("--service", default=SERVICE)
    p.add_argument("--meter", default="meter-1")
    p.add_argument("--seq", type=int, default=1)
    p.add_argument("--wh", type=int, required=True, help="the reading, in Wh")
    args = p.parse_args(argv)
    epoch = day_epoch()
    try:
        key = local_session_key(args.socket, sd=args.sd, service=args.service, epoch=epoch)
    except SessionKeyUnavailable as e:
        print(f"demo_meter: no session key: {e}", file=sys.stderr)
        return 1
    print(json.dumps(sign_reading(key, Reading(args.meter, args.seq, epoch, args.wh))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
