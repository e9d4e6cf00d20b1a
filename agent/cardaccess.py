"""The card shared by the runner and the local API (:class:`CardAccess`), and the session-key
derivation on the SE (:func:`derive_on_card`).

Apart from :mod:`agent.localapi` so that an agent without ``[localapi]`` does not load the HTTP
server modules (``socketserver``, ``http.server``: ~1.5 MiB of an idle agent's memory);
:mod:`agent.localapi` re-exports both names.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from agent.backends import CardBackend
from agent.errors import AgentError, BackendError
from gp.sessionkeys import DeriveSessionKey

__all__ = ["CardAccess", "LocalApiError", "derive_on_card"]


class LocalApiError(AgentError):
    """A request the local API refuses: HTTP ``status`` and a stable ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class CardAccess:
    """A backend shared by the runner and the local API: one lock around every card exchange.

    It is a :class:`~agent.backends.CardBackend` itself (the runner takes it in place of the
    backend); :meth:`exclusive` holds the card for a multi-APDU sequence.
    """

    def __init__(self, backend: CardBackend) -> None:
        self.backend = backend
        self.kind = backend.kind
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._lock:
            yield

    def transmit(self, apdu: bytes) -> bytes:
        with self._lock:
            return self.backend.transmit(apdu)

    def reset(self) -> None:
        with self._lock:
            self.backend.reset()

    def close(self) -> None:
        with self._lock:
            self.backend.close()

    def identifiers(self) -> dict[str, str]:
        with self._lock:
            return self.backend.identifiers()

    @property
    def takes_apdus(self) -> bool:
        return bool(getattr(self.backend, "takes_apdus", True))

    def derive_session_key(self, *, sd: bytes, service: str, epoch: int) -> bytes:
        """The session key of SD ``sd``: DERIVE SESSION KEY on the SE (:func:`derive_on_card`), or the
        backend's own derivation when it has one (a PKCS#11 token: :mod:`agent.backends.pkcs11`)."""
        own = getattr(self.backend, "derive_session_key", None)
        if own is None:
            return derive_on_card(self, sd=sd, service=service, epoch=epoch)
        with self._lock:
            return bytes(own(sd=sd, service=service, epoch=epoch))


def _sw(rapdu: bytes) -> int:
    return int.from_bytes(rapdu[-2:], "big") if len(rapdu) >= 2 else 0


def derive_on_card(access: CardAccess, *, sd: bytes, service: str, epoch: int) -> bytes:
    """The session key the SE's SD ``sd`` derives for ``service``/``epoch`` (docs/session-keys.md §3).

    1. MANAGE CHANNEL open (the card picks a free supplementary channel);
    2. SELECT the SD by AID on it;
    3. DERIVE SESSION KEY (``80 5A``) on it;
    4. MANAGE CHANNEL close — always, so the runner never sees the channel.
    All four under the card lock. LocalApiError on any refusal, BackendError when the card is away.
    """
    with access.exclusive():
        rsp = access.transmit(bytes.fromhex("0070000001"))
        if _sw(rsp) != 0x9000 or len(rsp) != 3:
            raise LocalApiError(503, "card_busy", f"no free logical channel (SW {_sw(rsp):04X})")
        channel = rsp[0]
        cla = channel if channel < 4 else 0x40 | (channel - 4)
        try:
            rsp = access.transmit(bytes([cla, 0xA4, 0x04, 0x00, len(sd)]) + sd + b"\x00")
            if _sw(rsp) == 0x6A82:
                raise LocalApiError(404, "sd_not_found", f"no selectable security domain {sd.hex().upper()}")
            if _sw(rsp) not in (0x9000,):
                raise LocalApiError(502, "card_error", f"SELECT answered SW {_sw(rsp):04X}")
            cmd = DeriveSessionKey(service, epoch).to_apdu(channel=channel)
            rsp = access.transmit(cmd.encode())
            sw = _sw(rsp)
            if sw == 0x6A88:
                raise LocalApiError(
                    404, "no_master_key", f"security domain {sd.hex().upper()} holds no service master key"
                )
            if sw == 0x6D00:
                raise LocalApiError(404, "sd_not_found", f"{sd.hex().upper()} is not a security domain")
            if sw != 0x9000 or len(rsp) != 18:
                raise LocalApiError(502, "card_error", f"DERIVE SESSION KEY answered SW {sw:04X}")
            return rsp[:-2]
        finally:
            with contextlib.suppress(BackendError):
                access.transmit(bytes([0x00, 0x70, 0x80, channel, 0x00]))  # from the basic channel
