"""How the agent reaches the portal: one signed ``POST /agent/v1/exchange`` per call.

:class:`Transport` is the seam (STYLE habit 11): the runner only knows ``exchange``; tests inject
an in-memory fake server, production uses :class:`HttpTransport`. Failures are
:class:`~agent.errors.TransportError` subclasses, all of which the runner answers with backoff:

=====================  =============================================================
401                    :class:`Unauthorized` with the portal's reason ``code``
413                    :class:`RequestTooLarge`
other 4xx / 5xx        :class:`ClientError` / :class:`ServerError` (``Retry-After`` kept)
timeout                :class:`TransportTimeout`
connection, DNS, TLS   :class:`NetworkError`
invalid 200 body       :class:`BadResponse`
=====================  =============================================================

Log lines carry the status, sizes and the error code — never the key, the signature or a body.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from agent import __version__
from agent.config import AgentConfig
from agent.errors import (
    BadResponse,
    ClientError,
    NetworkError,
    ProtocolError,
    RequestTooLarge,
    ServerError,
    TransportError,
    TransportTimeout,
    Unauthorized,
)
from agent.httpsig import sign_request
from agent.protocol import EXCHANGE_PATH, MAX_BODY_BYTES, ExchangeRequest, ExchangeResponse, decode, encode

__all__ = ["MAX_RESPONSE_BYTES", "HttpTransport", "Transport"]

log = logging.getLogger("agent.transport")

# A response may carry up to 64 items of 256 commands: far beyond the request limit in theory;
# in practice the portal sends a few KiB. Anything above this is refused as a misbehaving peer.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class Transport(Protocol):
    def exchange(self, request: ExchangeRequest) -> ExchangeResponse: ...

    def close(self) -> None: ...


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 86400 else None


def _error_of(body: bytes) -> tuple[str, str]:
    """``(code, message)`` from ``{"error": {"code": …, "message": …}}``, empty when absent."""
    try:
        obj = json.loads(body[:4096].decode("utf-8"))
        error = obj.get("error", {}) if isinstance(obj, dict) else {}
        code = error.get("code", "") if isinstance(error, dict) else ""
        message = error.get("message", "") if isinstance(error, dict) else ""
    except (ValueError, UnicodeDecodeError, AttributeError):
        return "", ""
    return (str(code)[:64], str(message)[:200]) if isinstance(code, str) else ("", "")


class HttpTransport:
    """Signed JSON over HTTPS with httpx (redirects are not followed: a signature covers one path)."""

    def __init__(
        self,
        config: AgentConfig,
        identity_private_key: ec.EllipticCurvePrivateKey,
        client: httpx.Client | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = identity_private_key
        self._clock = clock
        self.url = httpx.URL(config.server_url + EXCHANGE_PATH)
        self.path = self.url.raw_path.decode("ascii").split("?", 1)[0]
        self._own_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(config.timeouts.read_s, connect=config.timeouts.connect_s),
            verify=str(config.ca_file) if config.ca_file is not None else True,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"HttpTransport({str(self.url)!r})"

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def exchange(self, request: ExchangeRequest) -> ExchangeResponse:
        body = encode(request.to_json())
        if len(body) > MAX_BODY_BYTES:
            raise RequestTooLarge(f"request body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        headers = sign_request(
            private_key=self._key, method="POST", path=self.path, body=body, created=int(self._clock())
        )
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json"
        headers["User-Agent"] = f"tessera-agent/{__version__}"
        try:
            with self._client.stream("POST", self.url, content=body, headers=headers) as response:
                content = self._read_limited(response)
        except httpx.TimeoutException as e:
            raise TransportTimeout(f"portal did not answer in time ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise NetworkError(f"portal unreachable: {type(e).__name__}: {e}") from None
        log.debug(
            "event=exchange status=%d sent_bytes=%d received_bytes=%d",
            response.status_code,
            len(body),
            len(content),
        )
        if response.status_code == 200:
            try:
                return ExchangeResponse.from_json(decode(content, max_bytes=None))
            except ProtocolError as e:
                raise BadResponse(f"portal answered an invalid exchange response: {e}") from None
        raise self._status_error(response, content)

    def _read_limited(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise BadResponse(f"portal response exceeds {MAX_RESPONSE_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _status_error(response: httpx.Response, content: bytes) -> TransportError:
        status = response.status_code
        code, message = _error_of(content)
        error: TransportError
        if status == 401:
            error = Unauthorized(code or "unauthorized", message)
        elif status == 413:
            error = RequestTooLarge(
                f"portal refused the request body as too large (413){': ' + code if code else ''}"
            )
        elif 400 <= status < 500:
            error = ClientError(status, f"portal refused the exchange: HTTP {status} {code}".rstrip())
        elif status >= 500:
            error = ServerError(status, f"portal failed: HTTP {status} {code}".rstrip())
        else:
            error = ClientError(status, f"unexpected HTTP {status} from the portal")
        error.retry_after = _retry_after(response)
        return error
