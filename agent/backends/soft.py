"""The software secure element (:class:`gp.card.SoftCard`) as a backend.

The card is opened once and kept open: an interactive SCP03 session (INITIALIZE UPDATE in one
exchange, EXTERNAL AUTHENTICATE in the next) lives in the card object's memory, exactly as it
lives in a real card's RAM between two APDUs. Every state change is committed to ``STATE_PATH``
by the card itself before it answers.
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

    @property
    def card(self) -> SoftCard:
        if self._card is None:
            raise BackendError("the soft card backend is closed")
        return self._card

    def transmit(self, apdu: bytes) -> bytes:
        return self.card.transmit(bytes(apdu))

    def reset(self) -> None:
        self.card.reset()

    def close(self) -> None:
        self._card = None

    def identifiers(self) -> dict[str, str]:
        if self._ids is None:
            self._ids = read_identifiers(self.transmit)
        return dict(self._ids)
