"""One exception hierarchy for the agent (STYLE habit 11): every I/O failure has its own type.

``AgentError`` is the root; the CLI maps each branch to an exit code (see :mod:`agent.cli`).
Messages say what went wrong and what to do about it, and never carry key material or APDU data.
This module is stdlib-only: the portal imports :mod:`agent.protocol` and :mod:`agent.httpsig`,
which raise :class:`ProtocolError` and :class:`SignatureError` from here.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "BackendError",
    "BadResponse",
    "CardRemoved",
    "ClientError",
    "ConfigError",
    "HttpStatusError",
    "JournalError",
    "NetworkError",
    "ProtocolError",
    "ReaderNotFound",
    "RequestTooLarge",
    "ServerError",
    "SignatureError",
    "TransportError",
    "TransportTimeout",
    "Unauthorized",
]


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """The configuration (file, key file, backend spec) is unusable; the message names the key and file."""


class ProtocolError(AgentError, ValueError):
    """A message does not follow docs/agent-protocol.md; the message names the offending field.

    ``field`` is the path of the field (``work[2].commands[0].apdu``, empty for the body itself)
    and ``reason`` what is wrong with it; ``str(error)`` is ``"<field>: <reason>"``.
    """

    field: str = ""
    reason: str = ""


class SignatureError(AgentError):
    """An RFC 9421 request signature is refused. ``code`` is the wire reason (docs/agent-protocol.md).

    Codes: ``signature_missing``, ``signature_malformed``, ``digest_mismatch``, ``unknown_key``,
    ``stale``, ``bad_signature``; the server adds ``device_suspended`` and ``replayed``.
    """

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or code)
        self.code = code


class TransportError(AgentError):
    """The exchange with the portal failed; the runner backs off and retries.

    ``retry_after`` carries the server's ``Retry-After`` (seconds) when it sent one.
    """

    retry_after: float | None = None


class NetworkError(TransportError):
    """The portal could not be reached (DNS, connection refused, TLS, reset)."""


class TransportTimeout(NetworkError):
    """The portal did not answer in time."""


class Unauthorized(TransportError):
    """401: the portal refused the request signature; ``code`` is its reason."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(
            f"portal refused the request signature: {code}" + (f" ({message})" if message else "")
        )
        self.code = code


class RequestTooLarge(TransportError):
    """413: the request body exceeded the portal's limit."""


class HttpStatusError(TransportError):
    """The portal answered with an unexpected HTTP status (``status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClientError(HttpStatusError):
    """Another 4xx answer: the request itself is wrong (an agent or protocol version problem)."""


class ServerError(HttpStatusError):
    """5xx: the portal failed; retry later."""


class BadResponse(TransportError):
    """The portal answered 200 with a body that is not a valid protocol message."""


class BackendError(AgentError):
    """The secure element could not be reached or did not answer."""


class ReaderNotFound(BackendError):
    """No PC/SC reader matches the configured name."""


class CardRemoved(BackendError):
    """The card left the reader (or was reset) and could not be reached again."""


class JournalError(AgentError):
    """The SQLite journal could not be read or written: the agent stops rather than risk repeating work."""
