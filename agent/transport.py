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

HTTP is the standard library's :mod:`http.client` under :class:`PortalConnection` (one persistent
connection, HTTP/1.1 keep-alive): a gateway agent sends one small request every few seconds, and
httpx with httpcore, anyio, h11, idna and certifi's bundle cost ~7 MiB of the agent's resident
memory for nothing it needs (bench/README.md, ``agent_tee``). What it keeps from httpx:

- **TLS verification**: ``CERT_REQUIRED``, host name checked, TLS ≥ 1.2 — against ``ca_file``
  when configured, else the **system trust store** (``ssl.create_default_context()``: the
  distribution's ``ca-certificates``, kept current by its security updates; httpx used certifi's
  copy, which only a pip upgrade refreshes);
- **timeouts**: ``connect_s`` bounds the TCP connect and the TLS handshake, ``read_s`` every read
  and write after it;
- **keep-alive**: the connection is reused while the portal keeps it open; one the portal closed
  while idle (checked before each request, as httpcore does) is replaced before the request is
  sent — a request that was sent is never resent (the runner's backoff retries the exchange);
- **no redirects** (a signature covers one path), the response size limit, ``HTTPS_PROXY`` /
  ``NO_PROXY`` from the environment for ``https://`` portals (an HTTP CONNECT tunnel; the proxy
  never sees inside TLS).

Log lines carry the status, sizes and the error code — never the key, the signature or a body.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import select
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

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

__all__ = [
    "MAX_RESPONSE_BYTES",
    "HttpResponse",
    "HttpTransport",
    "PortalConnection",
    "Transport",
    "tls_context",
]

log = logging.getLogger("agent.transport")

# A response may carry up to 64 items of 256 commands: far beyond the request limit in theory;
# in practice the portal sends a few KiB. Anything above this is refused as a misbehaving peer.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_CHUNK = 64 * 1024


class Transport(Protocol):
    def exchange(self, request: ExchangeRequest) -> ExchangeResponse: ...

    def close(self) -> None: ...


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The client TLS context: certificate and host name verified, TLS 1.2 at least; trust anchors
    from ``ca_file`` (PEM) or, without one, the system's trust store."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _proxy_for(scheme: str, host: str) -> tuple[str, int] | None:
    """``HTTPS_PROXY`` (or ``https_proxy``) unless ``NO_PROXY`` covers ``host``; https only."""
    if scheme != "https":
        return None
    env = os.environ
    proxy = env.get("https_proxy") or env.get("HTTPS_PROXY")
    if not proxy:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    name = host.lower().rstrip(".")
    for entry in (e.strip().lower().lstrip(".") for e in no_proxy.split(",")):
        if entry == "*" or (entry and (name == entry or name.endswith("." + entry))):
            return None
    parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    if parts.scheme != "http" or not parts.hostname:
        raise NetworkError(f"HTTPS_PROXY: only an http:// proxy is supported, got scheme {parts.scheme!r}")
    return parts.hostname, parts.port or 80


class PortalConnection:
    """One persistent HTTP/1.1 connection to the portal's origin (module docstring).

    ``request`` answers an :class:`HttpResponse` of any status, or raises
    :class:`~agent.errors.TransportTimeout` / :class:`~agent.errors.NetworkError` with the
    underlying error as ``__cause__`` (the doctor names untrusted certificates from it) and
    :class:`~agent.errors.BadResponse` for a body over ``max_response_bytes``. Not thread-safe:
    one caller at a time (the runner's loop, or the doctor).
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        ca_file: Path | None = None,
        user_agent: str = f"tessera-agent/{__version__}",
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        # The path prefix as sent on the wire (and signed): percent-encoded like httpx did.
        self.prefix = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.user_agent = user_agent
        self.max_response_bytes = max_response_bytes
        self._ca_file = ca_file
        self._context: ssl.SSLContext | None = None  # made on the first https connection
        self._conn: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:
        return f"PortalConnection({self.scheme}://{self.host}:{self.port}{self.prefix})"

    def __enter__(self) -> PortalConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def path(self, path: str) -> str:
        """``path`` under the base URL's prefix, as sent and signed."""
        return self.prefix + path

    def _new_connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        proxy = _proxy_for(self.scheme, self.host)
        if self.scheme == "https":
            if self._context is None:
                self._context = tls_context(self._ca_file)
            if proxy is None:
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.connect_timeout, context=self._context
                )
            else:
                conn = http.client.HTTPSConnection(
                    proxy[0], proxy[1], timeout=self.connect_timeout, context=self._context
                )
                conn.set_tunnel(self.host, self.port)  # TLS to the portal, through CONNECT
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        conn.connect()  # TCP (+ CONNECT) + TLS handshake under connect_s
        assert conn.sock is not None
        conn.sock.settimeout(self.read_timeout)
        return conn

    def _usable(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            # An idle keep-alive connection the portal closed (or wrote to) reads as ready: drop it.
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if not readable:
                return conn
        self.close()
        self._conn = self._new_connection()
        return self._conn

    def request(
        self, method: str, path: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        """``method`` on ``path`` (already under the prefix: :meth:`path`); no redirect followed."""
        sent = {"User-Agent": self.user_agent, **(headers or {})}
        try:
            conn = self._usable()
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            content = self._read_limited(response)
        except TimeoutError as e:
            self.close()
            raise TransportTimeout(f"portal did not answer in time ({type(e).__name__})") from e
        except BadResponse:
            self.close()
            raise
        except (OSError, http.client.HTTPException) as e:  # refused, DNS, TLS, reset, bad HTTP
            self.close()
            raise NetworkError(f"portal unreachable: {type(e).__name__}: {e}") from e
        if response.will_close:
            self.close()
        return HttpResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, content)

    def _read_limited(self, response: http.client.HTTPResponse) -> bytes:
        length = response.getheader("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_response_bytes:
            raise BadResponse(f"portal response exceeds {self.max_response_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read(_CHUNK):
            size += len(chunk)
            if size > self.max_response_bytes:
                raise BadResponse(f"portal response exceeds {self.max_response_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _retry_after(response: HttpResponse) -> float | None:
    value = response.header("retry-after")
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
    """Signed JSON over HTTP(S) through one :class:`PortalConnection` (redirects are not followed:
    a signature covers one path)."""

    def __init__(
        self,
        config: AgentConfig,
        identity_private_key: Any,
        connection: PortalConnection | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = identity_private_key
        self._clock = clock
        self._conn = connection or PortalConnection(
            config.server_url,
            connect_timeout=config.timeouts.connect_s,
            read_timeout=config.timeouts.read_s,
            ca_file=config.ca_file,
        )
        self.path = self._conn.path(EXCHANGE_PATH)
        self.url = config.server_url + EXCHANGE_PATH

    def __repr__(self) -> str:
        return f"HttpTransport({self.url!r})"

    def close(self) -> None:
        self._conn.close()

    def exchange(self, request: ExchangeRequest) -> ExchangeResponse:
        body = encode(request.to_json())
        if len(body) > MAX_BODY_BYTES:
            raise RequestTooLarge(f"request body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        headers = sign_request(
            private_key=self._key, method="POST", path=self.path, body=body, created=int(self._clock())
        )
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json"
        response = self._conn.request("POST", self.path, body=body, headers=headers)
        log.debug(
            "event=exchange status=%d sent_bytes=%d received_bytes=%d",
            response.status,
            len(body),
            len(response.body),
        )
        if response.status == 200:
            try:
                return ExchangeResponse.from_json(decode(response.body, max_bytes=None))
            except ProtocolError as e:
                raise BadResponse(f"portal answered an invalid exchange response: {e}") from None
        raise self._status_error(response)

    @staticmethod
    def _status_error(response: HttpResponse) -> TransportError:
        status = response.status
        code, message = _error_of(response.body)
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
