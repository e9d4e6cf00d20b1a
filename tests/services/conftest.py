"""Real services for the ``services`` tests: Redis (a dedicated DB number) and a Celery worker process.

Nothing here touches the shared Redis beyond keys these tests create: a dedicated database number
(``TESSERA_TEST_REDIS_DB``, default 15), a unique queue and channel prefix per run, and only those
keys are deleted afterwards — never FLUSHDB.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import port_open, service_unavailable
from tests.support.fixtures import fast_password_hasher  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = uuid.uuid4().hex[:10]


def _redis_base() -> tuple[str, int]:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis URL on the test database number, or skip (fail under TESSERA_REQUIRE_SERVICES=1)."""
    host, port = _redis_base()
    if not port_open(host, port):
        service_unavailable(f"Redis is not reachable at {host}:{port}")
    db = int(os.environ.get("TESSERA_TEST_REDIS_DB", "15"))
    return f"redis://{host}:{port}/{db}"


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {redis_url} does not answer: {exc}")
    yield client
    client.close()


def _database_url_for_worker() -> str | None:
    """The test database as a URL the worker can open, when it is shareable (PostgreSQL)."""
    from django.db import connection

    sd = connection.settings_dict
    if connection.vendor != "postgresql":
        return None
    user = sd.get("USER") or ""
    password = f":{sd['PASSWORD']}" if sd.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = sd.get("HOST") or "127.0.0.1"
    port = sd.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{sd['NAME']}"


@dataclass
class Worker:
    queue: str
    broker: str
    process: subprocess.Popen[str]
    log: Path
    shares_database: bool
    task_ids: list[str] = field(default_factory=list)

    def app(self) -> Any:
        """A Celery client on the worker's broker (the test process's own app may be eager)."""
        from celery import Celery

        # not the current app: shared tasks of this process (e.g. an eager ping) must stay on portal's
        app = Celery("tessera-tests", broker=self.broker, backend=self.broker, set_as_current=False)
        app.conf.update(task_always_eager=False, task_serializer="json", accept_content=["json"])
        return app

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def celery_worker(
    redis_url: str, redis_client: Any, django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any
) -> Iterator[Worker]:
    """A real ``celery -A portal worker --pool=solo`` on a queue of its own."""
    queue = f"tessera-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    tmp = tmp_path_factory.mktemp("worker")
    with django_db_blocker.unblock():
        database_url = _database_url_for_worker()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp)),
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "TESSERA_VAR_DIR": str(tmp),
        "PYTHONPATH": str(ROOT),
    }
    if database_url:
        env["DATABASE_URL"] = database_url
    log = tmp / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "portal", "worker",
                "--pool=solo", "-Q", queue, "-n", f"{queue}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    worker = Worker(
        queue=queue, broker=redis_url, process=process, log=log, shares_database=bool(database_url)
    )
    try:
        _wait_until_ready(worker)
        yield worker
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        keys = [
            queue,
            f"_kombu.binding.{queue}",
            f"_kombu.binding_permanent.{queue}",
            *(f"celery-task-meta-{t}" for t in worker.task_ids),
        ]
        redis_client.delete(*keys)


def _wait_until_ready(worker: Worker, timeout: float = 60.0) -> None:
    app = worker.app()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            pytest.fail(f"the Celery worker exited with {worker.process.returncode}:\n{worker.output()}")
        result = app.send_task("portal.ping", queue=worker.queue)
        worker.task_ids.append(result.id)
        try:
            result.get(timeout=5)
            return
        except Exception:  # noqa: BLE001 - not ready yet; retried until the deadline
            continue
    pytest.fail(f"the Celery worker did not answer within {timeout:.0f}s:\n{worker.output()}")


@pytest.fixture
def redis_channel_layers(settings: Any, redis_url: str) -> str:
    """Point Channels at Redis (test DB number, a prefix of this run) for one test."""
    prefix = f"tessera-test-{RUN_ID}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix, "expiry": 30, "group_expiry": 60},
        }
    }
    return prefix
