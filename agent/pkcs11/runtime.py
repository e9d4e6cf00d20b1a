"""The configured token, opened once per process (PKCS#11 logs in per application, not per session)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.config import AgentConfig, TokenSettings
    from agent.pkcs11.token import Token

__all__ = ["close_tokens", "open_settings", "token_for"]

_OPEN: dict[tuple[str, str], Token] = {}
_LOCK = threading.Lock()


def open_settings(settings: TokenSettings, *, probe: bool = True) -> Token:
    """Open (and by default probe) the token of a ``[token]`` table; one per (module, label)."""
    from agent.pkcs11.token import open_token, read_pin_file

    key = (str(settings.module), settings.label)
    with _LOCK:
        token = _OPEN.get(key)
        if token is None:
            pin = read_pin_file(settings.pin_file) if settings.login == "pin" and settings.pin_file else None
            token = open_token(
                settings.module, settings.label, pin=pin, tee_identity=settings.login == "tee-identity"
            )
            if probe:
                try:
                    token.probe()
                except Exception:
                    token.close()
                    raise
            _OPEN[key] = token
        return token


def token_for(config: AgentConfig) -> Token:
    if config.token is None:
        raise ConfigError("no [token] table in the configuration")
    return open_settings(config.token)


def close_tokens() -> None:
    with _LOCK:
        for token in _OPEN.values():
            token.close()
        _OPEN.clear()
