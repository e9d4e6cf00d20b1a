"""The software secure element (:class:`gp.card.SoftCard`) as a backend.

The card is opened once and kept open: an interactive SCP03 session (INITIALIZE UPDATE in one
exchange, EXTERNAL AUTHENTICATE in the next) lives in the card object's memory, exactly as it
lives in a real card's RAM between two APDUs. Every state change is committed to ``STATE_PATH``
by the card itself before it answers.

Two test hooks, read from the environment when the backend opens (off unless set; the end-to-end
tests in ``tests/e2e`` use them):

- ``TESSERA_APDU_LOG=PATH`` appends the hex of every C-APDU the card receives to ``PATH``, one a
  line, written before the card runs it (so a crash cannot lose the line);
- ``TESSERA_AGENT_CRASH_AFTER=N`` or ``INS:N`` (INS in hex) ends the process with ``os._exit(137)``
  — as ``kill -9`` would — right after the card answered the N-th command (with that INS), before
  the agent could journal the response.
"""

from __future__ import annotations

import os

from agent.backends import read_identifiers
from agent.errors import BackendError, ConfigError
from gp.card import SoftCard, StorageError
from gp.errors import GPError

__all__ = ["SoftBackend"]


class SoftBackend:
    kind = "soft"

    def __init__(self, state_path: str, *, state_key: bytes | None = None) -> None:
        self.state_path = state_path
        if not os.path.isfile(state_path):  # SoftCard.open would create a state secret beside it
            raise ConfigError(f"backend: soft card state {state_path} does not exist (python -m agent init)")
        try:
            self._card: SoftCard | None = SoftCard.open(state_path, state_key=state_key)
        except (StorageError, GPError, OSError) as e:
            raise BackendError(f"soft card {state_path} cannot be opened: {e}") from None
        self._ids: dict[str, str] | None = None
        self._apdu_log = os.environ.get("TESSERA_APDU_LOG") or None
        self._crash_ins, self._crash_after = _crash_hook(os.environ.get("TESSERA_AGENT_CRASH_AFTER", ""))
        self._refuse_ins = _refuse_hook(os.environ.get("TESSERA_AGENT_CARD_REFUSES", ""))

    @property
    def card(self) -> SoftCard:
        if self._card is None:
            raise BackendError("the soft card backend is closed")
        return self._card

    def transmit(self, apdu: bytes) -> bytes:
        apdu = bytes(apdu)
        if self._apdu_log:
            log_apdu(self._apdu_log, apdu)
        if self._refuse_ins and len(apdu) > 1 and apdu[1] in self._refuse_ins:
            return b"\x6a\x80"  # the test hook: a card that refuses this instruction
        rapdu = self.card.transmit(apdu)
        if self._crash_after and (self._crash_ins is None or (len(apdu) > 1 and apdu[1] == self._crash_ins)):
            self._crash_after -= 1
            if not self._crash_after:
                os._exit(137)  # the test hook: a power cut after the card acted, before the journal
        return rapdu

    def reset(self) -> None:
        self.card.reset()

    def close(self) -> None:
        if self._card is not None:
            self._card.close()  # writes the exact sequence counters (gp.card.softcard: reservation)
        self._card = None

    def identifiers(self) -> dict[str, str]:
        if self._ids is None:
            self._ids = read_identifiers(self.transmit)
        return dict(self._ids)


def log_apdu(path: str, apdu: bytes) -> None:
    """Append one C-APDU (hex) to ``path`` with a single ``write`` (test hook, see the module doc)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, apdu.hex().upper().encode() + b"\n")
    finally:
        os.close(fd)


def _crash_hook(value: str) -> tuple[int | None, int]:
    value = value.strip()
    if not value:
        return None, 0
    ins, _, count = value.rpartition(":")
    try:
        return (int(ins, 16) if ins else None), int(count)
    except ValueError:
        raise ConfigError(f"TESSERA_AGENT_CRASH_AFTER={value!r} is not N or INS:N") from None


def _refuse_hook(value: str) -> frozenset[int]:
    """``TESSERA_AGENT_CARD_REFUSES=D8,E4``: the soft card answers 6A80 to these instructions
    without acting (a test hook, like ``TESSERA_AGENT_CRASH_AFTER``)."""
    try:
        return frozenset(int(v, 16) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise ConfigError(f"TESSERA_AGENT_CARD_REFUSES={value!r} is not a list of hex INS bytes") from None
