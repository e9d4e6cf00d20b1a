"""A secure element behind a PC/SC reader (pcscd), through pyscard.

- The reader is chosen by exact name, or by a prefix matching exactly one reader
  (``pcsc:Virtual PCD 00 01`` or ``pcsc:Virtual PCD``); connection is retried a few times since a
  reader or card may appear a moment after the agent starts; T=1 or T=0, whichever the card offers.
- ISO/IEC 7816-4 transport rules the agent applies on the card's behalf: ``61xx`` → GET RESPONSE
  (on the command's logical channel) until all data is read; ``6Cxx`` → the command once more
  with Le = xx. The R-APDU returned is then the complete data and the final SW.
- Card reset by someone else (``SCARD_W_RESET_CARD``): pcscd did not send the command; the
  backend reconnects and sends it once more. Card removed or any other link failure: the
  command's outcome is unknown, so it is not re-sent — the backend reconnects once (so the next
  item can run) and raises :class:`~agent.errors.CardRemoved` (the runner reports the item
  ``interrupted``); if reconnecting fails, the message says so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from agent.backends import read_identifiers
from agent.errors import BackendError, CardRemoved, ConfigError, ReaderNotFound
from gp.apdu import CommandAPDU
from gp.errors import GPError

try:
    from smartcard.CardConnection import CardConnection
    from smartcard.Exceptions import NoCardException, SmartcardException
    from smartcard.scard import SCARD_RESET_CARD, SCARD_W_RESET_CARD
    from smartcard.System import readers as _system_readers
except ImportError:  # pragma: no cover - pyscard is a dependency; this keeps the error readable
    _system_readers = None  # type: ignore[assignment]

__all__ = ["PcscBackend", "get_response_cla"]

MAX_GET_RESPONSE = 256  # 256 × 256 bytes: far more than any GP response


def get_response_cla(cla: int) -> int:
    """The CLA of GET RESPONSE on the logical channel coded in ``cla`` (ISO/IEC 7816-4 §5.4.1)."""
    if cla & 0x40:
        return 0x40 | (cla & 0x0F)
    return cla & 0x03


def _list_readers() -> Sequence[Any]:
    try:
        return list(_system_readers())  # type: ignore[misc]
    except SmartcardException as e:
        raise BackendError(f"PC/SC is not available (is pcscd running?): {e}") from None


class PcscBackend:
    kind = "pcsc"

    def __init__(
        self,
        reader_name: str,
        *,
        connect_attempts: int = 10,
        retry_interval: float = 0.5,
        list_readers: Callable[[], Sequence[Any]] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if list_readers is None and _system_readers is None:
            raise ConfigError("backend: pcsc needs pyscard (pip install pyscard)")
        self.reader_name = reader_name
        self._list_readers = list_readers or _list_readers
        self._attempts = max(1, connect_attempts)
        self._interval = retry_interval
        self._sleep = sleep
        self._conn: Any = None
        self._ids: dict[str, str] | None = None
        self.reader = ""
        self._connect()

    # -- connection --

    def _find_reader(self) -> Any:
        available = list(self._list_readers())
        names = [str(r) for r in available]
        for reader, name in zip(available, names, strict=True):
            if name == self.reader_name:
                return reader
        matches = [r for r, n in zip(available, names, strict=True) if n.startswith(self.reader_name)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ReaderNotFound(
                f"reader name {self.reader_name!r} matches several readers: {', '.join(str(m) for m in matches)}"
            )
        raise ReaderNotFound(
            f"no PC/SC reader named {self.reader_name!r} (available: {', '.join(names) or 'none'})"
        )

    def _connect(self) -> None:
        last: Exception | None = None
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._interval)
            conn = None
            try:
                reader = self._find_reader()
                conn = reader.createConnection()
                conn.connect(CardConnection.T1_protocol | CardConnection.T0_protocol)
            except (SmartcardException, BackendError) as e:
                last = e
                if conn is not None:  # release its PC/SC context now, not in a finaliser later
                    with contextlib.suppress(Exception):
                        conn.release()
                continue
            self._drop()
            self._conn = conn
            self.reader = str(reader)
            return
        if isinstance(last, ReaderNotFound):
            raise last
        raise CardRemoved(f"no card reachable in reader {self.reader_name!r}: {last}")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()
            with contextlib.suppress(Exception):
                conn.release()

    # -- APDUs --

    def _raw(self, apdu: bytes) -> tuple[bytes, int, int]:
        if self._conn is None:
            raise CardRemoved(f"no card connection on {self.reader_name!r}")
        data, sw1, sw2 = self._conn.transmit(list(apdu))
        return bytes(data), sw1, sw2

    def _exchange(self, apdu: bytes) -> bytes:
        data, sw1, sw2 = self._raw(apdu)
        if sw1 == 0x6C:
            try:
                cmd = CommandAPDU.parse(apdu)
                again = replace(cmd, le=sw2 or 256).encode()
            except (GPError, ValueError):
                again = None
            if again is not None:
                data, sw1, sw2 = self._raw(again)
        out = bytearray(data)
        for _ in range(MAX_GET_RESPONSE):
            if sw1 != 0x61:
                break
            more, sw1, sw2 = self._raw(bytes([get_response_cla(apdu[0]), 0xC0, 0x00, 0x00, sw2]))
            out += more
        return bytes(out) + bytes([sw1, sw2])

    def transmit(self, apdu: bytes) -> bytes:
        apdu = bytes(apdu)
        try:
            return self._exchange(apdu)
        except SmartcardException as e:
            reset = getattr(e, "hresult", None) == SCARD_W_RESET_CARD
            failure = str(e)
        try:
            self._connect()
        except BackendError as e:
            raise CardRemoved(f"card link lost ({failure}) and reconnecting failed: {e}") from None
        if not reset:
            raise CardRemoved(f"card link lost during the command ({failure}); reconnected, outcome unknown")
        try:
            return self._exchange(apdu)  # a reset card never saw the command: send it once more
        except SmartcardException as e:
            raise CardRemoved(f"card link lost again after a reset: {e}") from None

    def reset(self) -> None:
        """Warm reset: closes the card's logical channels and secure channel sessions."""
        if self._conn is None:
            self._connect()
            return
        try:
            self._conn.reconnect(disposition=SCARD_RESET_CARD)
        except (SmartcardException, NoCardException):
            self._connect()

    def close(self) -> None:
        self._drop()

    def identifiers(self) -> dict[str, str]:
        if self._ids is None:
            self._ids = read_identifiers(self.transmit)
        return dict(self._ids)
