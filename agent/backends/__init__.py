"""Secure element backends: how the agent reaches the card.

- ``soft:STATE_PATH`` — :class:`agent.backends.soft.SoftBackend`, the software SE of :mod:`gp.card`.
- ``pcsc:READER_NAME`` — :class:`agent.backends.pcsc.PcscBackend`, a reader through pcscd (pyscard).
- ``pkcs11:TOKEN_LABEL`` — :class:`agent.backends.pkcs11.TokenBackend`, the ``[token]`` itself (a TEE
  through OP-TEE's PKCS#11 TA): no APDUs, keys in the token (docs/tee-bridge.md).

With a ``[token]`` configured, the soft SE's state key comes from the token
(:meth:`agent.pkcs11.token.Token.state_key`) instead of a ``.secret`` file beside the state.

A backend relays APDUs and nothing else: it never interprets a script. ``transmit`` returns the
full R-APDU (data and SW1 SW2) or raises :class:`~agent.errors.BackendError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agent.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from agent.config import AgentConfig

__all__ = ["CardBackend", "open_backend", "open_configured_backend", "parse_backend_spec", "read_identifiers"]

SELECT_ISD = bytes.fromhex("00A4040000")
GET_CPLC = bytes.fromhex("80CA9F7F00")


@runtime_checkable
class CardBackend(Protocol):
    kind: str

    def transmit(self, apdu: bytes) -> bytes: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...

    def identifiers(self) -> dict[str, str]: ...


def read_identifiers(transmit: Callable[[bytes], bytes]) -> dict[str, str]:
    """``se_serial`` (CPLC IC serial number) and ``cplc`` (42 bytes), hex, read from the ISD.

    Sends SELECT (ISD, empty AID) and GET DATA 9F7F on the basic channel: call it before any
    script, since it ends whatever selection and secure channel session channel 0 had.
    """
    from gp.commands import CPLC
    from gp.errors import GPError

    rsp = transmit(SELECT_ISD)
    if rsp[-2:] not in (b"\x90\x00", b"\x62\x83"):
        raise BackendError(f"SELECT of the ISD answered SW {rsp[-2:].hex().upper()}")
    rsp = transmit(GET_CPLC)
    if rsp[-2:] != b"\x90\x00":
        raise BackendError(f"GET DATA CPLC (9F7F) answered SW {rsp[-2:].hex().upper()}")
    try:
        cplc = CPLC.parse(rsp[:-2])
    except (GPError, ValueError, IndexError) as e:
        raise BackendError(f"GET DATA CPLC returned unparsable data: {e}") from None
    return {"se_serial": cplc.ic_serial_number.hex().upper(), "cplc": cplc.encode().hex().upper()}


def parse_backend_spec(spec: str) -> tuple[str, str]:
    kind, sep, arg = spec.partition(":")
    if not sep or not arg or kind not in ("soft", "pcsc", "pkcs11"):
        raise ConfigError(f"backend: {spec!r} is not soft:STATE_PATH, pcsc:READER_NAME or pkcs11:TOKEN_LABEL")
    return kind, arg


def open_backend(spec: str, *, token: Any = None) -> CardBackend:
    """Open the backend named by ``spec`` (``soft:PATH`` | ``pcsc:READER`` | ``pkcs11:LABEL``).

    ``token`` (an open :class:`agent.pkcs11.token.Token`) keeps the soft SE's state key and is the
    ``pkcs11`` backend itself. ConfigError if the spec is unknown.
    """
    kind, arg = parse_backend_spec(spec)
    if kind == "soft":
        from agent.backends.soft import SoftBackend

        return SoftBackend(arg, state_key=token.state_key() if token is not None else None)
    if kind == "pkcs11":
        if token is None or token.label != arg:
            raise ConfigError(f"backend: {spec} needs the [token] labelled {arg!r}")
        from agent.backends.pkcs11 import TokenBackend

        return TokenBackend(token)
    from agent.backends.pcsc import PcscBackend

    return PcscBackend(arg)


def open_configured_backend(config: AgentConfig) -> CardBackend:
    """The backend of ``config``, with its ``[token]`` (opened and probed once) when there is one."""
    token = None
    if config.token is not None:
        from agent.pkcs11.runtime import token_for

        token = token_for(config)
    return open_backend(config.backend, token=token)
