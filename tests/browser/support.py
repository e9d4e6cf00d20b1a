"""The embedded portal and Chromium settings the browser tests share."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import port_open, service_unavailable

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "tessera-demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def embedded_portal(
    var: Path,
    *,
    extra_env: dict[str, str] | None = None,
    prepare: Callable[[int], list[list[str]]] = lambda port: [],
) -> Iterator[tuple[str, dict[str, str], list[subprocess.Popen[bytes]]]]:
    """``migrate`` + ``seed_demo`` (+ ``prepare(port)`` commands) on a fresh var dir, then daphne on a
    free port, on the embedded defaults. Yields (url, env, children); processes added to
    ``children`` are stopped with the server."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        service_unavailable(f"Chromium not found at {CHROMIUM}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DEBUG="1",
        SESSION_COOKIE_SECURE="0",
        TESSERA_VAR_DIR=str(var),
        TESSERA_DEMO_PASSWORD=PASSWORD,
        LOG_LEVEL="WARNING",
        **(extra_env or {}),
    )
    for command in (["migrate", "--no-input", "-v0"], ["seed_demo"], *prepare(port)):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True
        )
    log = (var / "daphne.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    children: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("daphne did not start:\n" + (var / "daphne.log").read_text()[-3000:])
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", env, children
    finally:
        for proc in [*children, server]:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
