"""A real HTTP receiver for webhook tests (a threaded ``http.server`` on 127.0.0.1), and real
Celery tasks run eagerly in process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.fixtures import fast_password_hasher  # noqa: F401


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next (status, delay) of ``script`` (the last one repeats)."""

    server: ThreadingHTTPServer
    script: list[tuple[int, float]] = field(default_factory=lambda: [(200, 0.0)])
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://127.0.0.1:{port}/hook"

    def answer(self, *statuses: int | tuple[int, float]) -> None:
        self.script = [s if isinstance(s, tuple) else (s, 0.0) for s in statuses]


def _handler(receiver_ref: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            rec = receiver_ref[0]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with rec.lock:
                index = len(rec.received)
                rec.received.append(Received(self.path, {k: v for k, v in self.headers.items()}, body))
                status, delay = rec.script[min(index, len(rec.script) - 1)]
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the client gave up (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    ref: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ref))
    server.daemon_threads = True
    rec = Receiver(server=server)
    ref.append(rec)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def eager_local(settings: Any, monkeypatch: Any) -> None:
    """Tasks run eagerly in process (even with REDIS_URL set), and http://127.0.0.1 is allowed as
    on the embedded default; short timeouts keep the timeout test quick."""
    from portal.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    monkeypatch.setitem(app.conf, "task_eager_propagates", True)
    settings.EMBEDDED = True
    settings.TESSERA_WEBHOOK_TIMEOUT_SECONDS = 1
