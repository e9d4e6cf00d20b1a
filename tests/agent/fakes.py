"""An in-memory portal for agent tests (python-tuf's habit: a fake server, not mocks).

:class:`FakeServer` is a :class:`agent.transport.Transport`: it keeps a queue of work, records the
results it is sent (acknowledging them as the real portal would), and can be told to fail the next
exchanges. Every request and response goes through the wire encoding, so a message that could
not cross the network cannot cross the fake either.

:class:`HttpFakePortal` serves the same fake over real HTTP on 127.0.0.1 and verifies the
RFC 9421 signature of every request, for :class:`agent.transport.HttpTransport` tests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import SignatureError, TransportError
from agent.httpsig import key_id, verify_request
from agent.protocol import (
    EXCHANGE_PATH,
    MAX_BODY_BYTES,
    Command,
    ExchangeRequest,
    ExchangeResponse,
    WorkItem,
    WorkResult,
    decode,
    encode,
)

SELECT_ISD = bytes.fromhex("00A4040008A000000151000000")
GET_CPLC = bytes.fromhex("80CA9F7F00")


def script(
    item: str, *commands: tuple[bytes, tuple[str, ...]], job: str = "job-1", kind: str = "apdu_script"
) -> WorkItem:
    return WorkItem(item, job, kind, 0, tuple(Command(a, e) for a, e in commands))


@dataclass
class FakeServer:
    poll_after: float = 30.0
    queue: list[WorkItem] = field(default_factory=list)
    results: dict[str, WorkResult] = field(default_factory=dict)
    requests: list[ExchangeRequest] = field(default_factory=list)
    failures: list[TransportError] = field(default_factory=list)
    ack: bool = True
    per_exchange: int = 64
    redeliver: list[WorkItem] = field(default_factory=list)

    def exchange(self, request: ExchangeRequest) -> ExchangeResponse:
        if self.failures:
            raise self.failures.pop(0)
        request = ExchangeRequest.from_json(decode(encode(request.to_json())))
        self.requests.append(request)
        for result in request.results:
            self.results.setdefault(result.item, result)  # idempotent per item
        acks = tuple(r.item for r in request.results) if self.ack else ()
        work = tuple(self.redeliver + self.queue[: self.per_exchange])
        self.redeliver = []
        del self.queue[: self.per_exchange]
        response = ExchangeResponse(acks, work, self.poll_after)
        return ExchangeResponse.from_json(decode(encode(response.to_json()), max_bytes=None))

    def close(self) -> None:
        pass

    @property
    def sent_results(self) -> list[WorkResult]:
        return [r for req in self.requests for r in req.results]


class _Handler(BaseHTTPRequestHandler):
    server: _PortalHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, obj: dict[str, object]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        portal = self.server.portal
        length = int(self.headers.get("Content-Length", "0"))
        if length > MAX_BODY_BYTES:
            self._answer(413, {"error": {"code": "too_large", "message": "body too large"}})
            return
        body = self.rfile.read(length)
        if portal.status_override is not None:
            status, obj = portal.status_override
            self._answer(status, obj)
            return
        if self.path != EXCHANGE_PATH:
            self._answer(404, {"error": {"code": "not_found", "message": ""}})
            return
        try:
            params = verify_request(
                method="POST",
                path=self.path,
                headers=dict(self.headers.items()),
                body=body,
                resolve_key=portal.keys.get,
                now=portal.now(),
            )
        except SignatureError as e:
            self._answer(401, {"error": {"code": e.code, "message": str(e)}})
            return
        if params.nonce in portal.nonces:
            self._answer(401, {"error": {"code": "replayed", "message": "nonce seen"}})
            return
        portal.nonces.add(params.nonce)
        request = ExchangeRequest.from_json(decode(body))
        response = portal.fake.exchange(request)
        self._answer(200, response.to_json())


class _PortalHTTPServer(ThreadingHTTPServer):
    portal: HttpFakePortal


@dataclass
class HttpFakePortal:
    fake: FakeServer
    keys: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    nonces: set[str] = field(default_factory=set)
    now: Callable[[], float] = time.time
    status_override: tuple[int, dict[str, object]] | None = None
    url: str = ""

    def register(self, public_key: ec.EllipticCurvePublicKey) -> None:
        self.keys[key_id(public_key)] = public_key

    @contextmanager
    def serving(self) -> Iterator[HttpFakePortal]:
        httpd = _PortalHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.portal = self
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
