"""Connect a :class:`~gp.card.SoftCard` to pcscd through vsmartcard's ``vpcd`` reader driver.

``python -m gp.card.vpcd PATH [--host 127.0.0.1] [--port 35963] [--state-key-hex HEX]``

vpcd raw protocol (vsmartcard ``vpcd.c``): every message is a 2-byte big-endian length and a
payload.  A 1-byte payload is a control code: ``0`` power off, ``1`` power on, ``2`` reset (no
answer to any of them), ``4`` get ATR (answer: length + ATR).  Any other payload is a C-APDU,
answered with length + R-APDU.  Power off, power on and reset close the card's logical channels
and secure channel sessions, as on a real card (ISO/IEC 7816-3 §6.2; GP CS v2.3.1 §6.4).
The client reconnects while vpcd is not listening yet, and exits cleanly on SIGTERM / SIGINT.

Test hook: with ``TESSERA_APDU_LOG=PATH`` in the environment, the hex of every C-APDU the card
receives is appended to ``PATH``, one a line, before the card runs it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType

from gp.card.softcard import SoftCard

__all__ = ["serve", "main"]

log = logging.getLogger("gp.card.vpcd")

POWER_OFF, POWER_ON, RESET, GET_ATR = 0, 1, 2, 4


class _Closed(Exception):
    pass


def _recv_exact(sock: socket.socket, n: int, stop: threading.Event) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if stop.is_set():
            raise _Closed
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            continue
        if not chunk:
            raise _Closed
        buf += chunk
    return bytes(buf)


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(len(payload).to_bytes(2, "big") + payload)


def _log_apdu(path: str, apdu: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, apdu.hex().upper().encode() + b"\n")
    finally:
        os.close(fd)


def _session(card: SoftCard, sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.5)
    apdu_log = os.environ.get("TESSERA_APDU_LOG") or None
    while not stop.is_set():
        length = int.from_bytes(_recv_exact(sock, 2, stop), "big")
        payload = _recv_exact(sock, length, stop)
        if length == 1:
            code = payload[0]
            if code == GET_ATR:
                _send(sock, card.atr)
            elif code in (POWER_OFF, POWER_ON, RESET):
                card.reset()
            continue
        if apdu_log:
            _log_apdu(apdu_log, payload)
        _send(sock, card.transmit(payload))


def serve(
    card: SoftCard,
    *,
    host: str = "127.0.0.1",
    port: int = 35963,
    stop: threading.Event | None = None,
    retry_interval: float = 0.5,
) -> None:
    """Keep the card inserted in vpcd until ``stop`` is set, reconnecting whenever the link drops."""
    stop = stop or threading.Event()
    announced = False
    while not stop.is_set():
        try:
            sock = socket.create_connection((host, port), timeout=2)
        except OSError as e:
            if not announced:
                log.info("vpcd at %s:%d not reachable (%s); retrying", host, port, e)
                announced = True
            stop.wait(retry_interval)
            continue
        log.info("card inserted into vpcd at %s:%d", host, port)
        announced = False
        try:
            with sock:
                _session(card, sock, stop)
        except (_Closed, OSError):
            log.info("vpcd connection closed")
        card.reset()  # the card left the reader: a power cycle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gp.card.vpcd", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="card file created with SoftCard.create")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=35963)
    parser.add_argument("--state-key-hex", default=None, help="state key (default: PATH.secret)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    key = bytes.fromhex(args.state_key_hex) if args.state_key_hex else None
    card = SoftCard.open(args.path, state_key=key)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        serve(card, host=args.host, port=args.port, stop=stop)
    finally:
        card.close()  # a clean stop: the exact sequence counters, no reservation left on disk
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
