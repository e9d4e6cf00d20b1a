"""SCP03 throughput on this CPU: ``.venv/bin/python -m bench.scp03 [--seconds N]``.

Prints, from one run:
1. raw AES-CMAC calls/s of ``cryptography`` (fresh context per 32-byte message: the baseline);
2. wrapped APDUs/s at levels 01 and 33 (host ``wrap`` + card ``unwrap_command``);
3. complete sessions/s (INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, five wrapped commands with
   their responses, both sides, level 33, pseudo-random challenge);
4. the CMAC calls one such session makes (counted at ``gp.scp03._cmac``; target <= 100) and the
   session's cost expressed in raw CMAC equivalents.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from gp import scp03
from gp.scp03 import CardSession, HostSession, StaticKeys

AID = bytes.fromhex("A000000151000000")
COMMANDS = [
    bytes.fromhex("80F28002024F0000"),
    bytes.fromhex("80CA006600"),
    bytes.fromhex("80F22002"),
    bytes.fromhex("80E2900010") + bytes(range(16)),
    bytes.fromhex("80F24002024F0000"),
]
RESPONSE = bytes.fromhex("E3264F08A0000001510000009F700101C5039EFE80C407A0000001515350CC08A000000151000000")


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn``, measured in batches for at least ``seconds``."""
    fn()  # warm-up
    calls, batch = 0, 64
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed
        batch *= 2


def raw_cmac(key: bytes, message: bytes) -> Callable[[], bytes]:
    def call() -> bytes:
        ctx = cmac.CMAC(algorithms.AES(key))
        ctx.update(message)
        return ctx.finalize()

    return call


def open_pair(keys: StaticKeys, level: int) -> tuple[HostSession, CardSession]:
    host = HostSession(keys, security_level=level, host_challenge=os.urandom(8), key_version=0x30)
    command = host.initialize_update()
    card, response = CardSession.begin(
        keys, host_challenge=command[5:-1], key_version=0x30, i_param=0x70, sequence_counter=1, aid=AID
    )
    if card.external_authenticate(host.external_authenticate(response)) != 0x9000:
        raise SystemExit("benchmark session failed to authenticate")
    return host, card


def full_session(keys: StaticKeys) -> None:
    host, card = open_pair(keys, 0x33)
    for command in COMMANDS:
        card.unwrap_command(host.wrap(command))
        host.unwrap(card.wrap_response(RESPONSE, 0x9000))


def wrap_rate(keys: StaticKeys, level: int, seconds: float) -> float:
    host, card = open_pair(keys, level)
    command = COMMANDS[3]
    return rate(lambda: card.unwrap_command(host.wrap(command)), seconds)


def count_cmacs(keys: StaticKeys) -> int:
    original = scp03._cmac
    calls = 0

    def counting(key: scp03._Aes, message: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return original(key, message)

    scp03._cmac = counting  # type: ignore[assignment]
    try:
        full_session(keys)
    finally:
        scp03._cmac = original  # type: ignore[assignment]
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per figure")
    args = parser.parse_args()
    keys = StaticKeys(bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48)))

    print(f"CPU: {platform.processor() or platform.machine()}  Python {platform.python_version()}")
    raw = rate(raw_cmac(keys.mac, bytes(32)), args.seconds)
    print(f"raw AES-CMAC (cryptography, fresh context, 32 B): {raw:12,.0f} calls/s")
    primed = scp03._Aes(keys.mac)
    print(
        f"AES-CMAC via gp.scp03._cmac (primed context copy): {rate(lambda: scp03._cmac(primed, bytes(32)), args.seconds):12,.0f} calls/s"
    )
    for level in (0x01, 0x33):
        print(
            f"wrapped APDUs, level {level:02X} (host wrap + card unwrap): {wrap_rate(keys, level, args.seconds):10,.0f} /s"
        )
    sessions = rate(lambda: full_session(keys), args.seconds)
    print(f"complete sessions, level 33 (IU, EA, 5 commands + responses): {sessions:8,.0f} /s")
    for length in (16, 32):
        big = StaticKeys(bytes(length), bytes(range(length)), bytes(length))
        print(
            f"CMAC calls in one complete level-33 session, AES-{8 * length}: {count_cmacs(big)} (target <= 100)"
        )
    print(
        f"session cost: {raw / sessions:.1f} raw CMAC equivalents (wall time of one session x raw CMAC rate)"
    )


if __name__ == "__main__":
    main()
