"""The real stack for end-to-end tests (markers ``e2e`` and ``services``).

One ``stack`` per session, all processes of its own:

- a PostgreSQL database ``tessera_e2e_<pid>`` on the shared server, migrated with
  ``manage.py migrate`` and dropped afterwards;
- a private ``redis-server`` on a free port (so tests may kill workers and flush nothing shared);
- the portal as shipped: ``daphne -b 127.0.0.1 -p <free port> portal.asgi:application``;
- a Celery worker (``--pool=solo``) and Celery beat (the sweeper every second);
- gateways: ``python -m agent init`` + enrolment through the REST API (the device by its
  manufacturer, the SE and its ISD keys — the hand-over file — by its issuer), then
  ``python -m agent run`` with a soft card, or a PC/SC reader served by pcscd + vpcd +
  ``python -m gp.card.vpcd``. Every C-APDU a card receives is logged (``TESSERA_APDU_LOG``).

Organisations, users and mandates are seeded with ``manage.py shell`` (tests/e2e/seed.py): the API
has no endpoint to create organisations.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

# Not from tests.conftest (which imports the Django models): bench/ uses this module without Django.
REQUIRE_SERVICES = os.environ.get("TESSERA_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes", "on"}


def service_unavailable(reason: str) -> None:
    """Skip — or, under TESSERA_REQUIRE_SERVICES=1, fail (as tests.conftest.service_unavailable)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


ROOT = Path(__file__).resolve().parents[2]
PG_HOST, PG_PORT = "127.0.0.1", 5432
PCSCD_SOCKET = "/run/pcscd/pcscd.comm"
PCSC_READER = "Virtual PCD 00 01"
PCSC_PORT = 35964
PASSWORD = "e2e-password-0123456789"
USERS = {
    "sei": "sei-owner",
    "tsm": "tsm-owner",
    "supplier": "supplier-owner",
    "stranger": "stranger-owner",
    "ses": "ses-owner",  # the SE supplier, the CA and the provider of test_confidential_flow
    "ca": "ca-owner",
    "provider": "provider-owner",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def apdu_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().split():
            counts[line] = counts.get(line, 0) + 1
    return counts


def repeated_secured_apdus(path: Path) -> dict[str, int]:
    """C-APDUs under secure messaging (CLA bit 04: every command of an SCP03 session after
    EXTERNAL AUTHENTICATE) that the card received more than once. Each carries a C-MAC chained to
    every command before it in its session, so a repeat can only be the same command sent twice."""
    return {a: n for a, n in apdu_counts(path).items() if n > 1 and int(a[:2], 16) & 0x04}


def state_changing(path: Path) -> list[str]:
    """Secured C-APDUs with a state-changing INS (INSTALL, PUT KEY, DELETE, STORE DATA, LOAD, SET STATUS)."""
    ins = {0xE6, 0xD8, 0xE4, 0xE2, 0xE8, 0xF0}
    return [a for a in apdu_counts(path) if int(a[2:4], 16) in ins]


@dataclass
class Gateway:
    name: str
    serial: str
    directory: Path
    config: Path
    backend: str
    apdu_log: Path
    device_id: str = ""
    isd_keys: dict[str, Any] = field(default_factory=dict)
    card_path: Path | None = None
    agent: subprocess.Popen[Any] | None = None
    vpcd: subprocess.Popen[Any] | None = None
    runs: int = 0


@dataclass
class Stack:
    tmp: Path
    env: dict[str, str]
    base_url: str
    db_name: str
    redis_url: str
    procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    gateways: dict[str, Gateway] = field(default_factory=dict)
    pcscd_unavailable: str = ""  # why the PC/SC gateway cannot run, if it cannot

    # -- processes --

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, cwd=ROOT, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def manage(self, *args: str, input: str | None = None) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if out.returncode:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def start_worker(self, name: str = "worker", *, concurrency: int = 0) -> subprocess.Popen[Any]:
        """A Celery worker: ``--pool=solo`` by default, prefork with ``concurrency`` processes if > 0."""
        pool = ["--pool=prefork", f"--concurrency={concurrency}"] if concurrency else ["--pool=solo"]
        proc = self.spawn(
            name,
            [sys.executable, "-m", "celery", "-A", "portal", "worker", *pool, "-n", f"{name}@e2e",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
        )  # fmt: skip
        wait_for(lambda: "ready." in self.log(name) or proc.poll() is not None, 60, f"{name} ready")
        assert proc.poll() is None, self.log(name)
        return proc

    # -- the REST API --

    def api(self, user: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url + "/api/v1",
            headers={"Authorization": f"Token {self.tokens[user]}", "Accept": "application/json"},
            timeout=30,
        )

    def request_job(
        self, user: str, org: str, device_id: str, kind: str, params: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        behalf = {"on_behalf_of": kw.pop("on_behalf_of")} if "on_behalf_of" in kw else {}
        with self.api(user) as c:
            r = c.post(
                f"/orgs/{org}/devices/{device_id}/jobs/",
                params=behalf,
                json={"kind": kind, "params": params, **kw},
            )
        assert r.status_code == 201, r.text
        return r.json()

    def job(self, user: str, org: str, job_id: str, **params: str) -> dict[str, Any]:
        with self.api(user) as c:
            r = c.get(f"/orgs/{org}/jobs/{job_id}/", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_job(
        self,
        user: str,
        org: str,
        job_id: str,
        timeout: float = 40,
        states: tuple[str, ...] | None = None,
        **params: str,
    ) -> dict[str, Any]:
        terminal = states or ("succeeded", "failed", "rejected", "timed_out", "canceled", "expired")
        return wait_for(
            lambda: (j := self.job(user, org, job_id, **params))["state"] in terminal and j,
            timeout,
            f"job {job_id} to reach {terminal}",
            interval=0.2,
        )

    # -- the database (read-only checks, through the portal's own models) --

    def query(self, code: str) -> Any:
        """Run ``code`` (which must set ``out``) in ``manage.py shell``; returns ``out`` as JSON."""
        script = code + "\nimport json as _j\nprint('@@' + _j.dumps(out, default=str))\n"
        text = self.manage("shell", "-c", script)
        line = next(ln for ln in text.splitlines() if ln.startswith("@@"))
        return json.loads(line[2:])

    # -- gateways --

    def gateway(self, name: str, serial: str, *, backend: str = "soft", wait_s: float = 0.0) -> Gateway:
        """A gateway enrolled for the SE issuer; ``wait_s`` > 0 makes its agent long-poll."""
        directory = self.tmp / "gateways" / name
        directory.mkdir(parents=True)
        gw = Gateway(
            name=name,
            serial=serial,
            directory=directory,
            config=directory / "agent.toml",
            backend=backend,
            apdu_log=directory / "apdus.log",
        )
        if backend == "soft":
            gw.card_path = directory / "card.se"
            spec = f"soft:{gw.card_path}"
        else:
            gw.card_path = directory / "vpcd-card.se"
            gw.isd_keys = _create_card(gw.card_path)
            self.start_vpcd(gw)
            spec = f"pcsc:{PCSC_READER}"
        out = subprocess.run(
            [sys.executable, "-m", "agent", "init", "--config", str(gw.config), "--server", self.base_url,
             "--serial", serial, "--backend", spec],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        init = json.loads(out.stdout)
        if backend == "soft":
            gw.isd_keys = json.loads(Path(init["isd_keys_file"]).read_text())
        self._fast_polls(gw.config, wait_s)
        self._enrol(gw, init)
        self.gateways[name] = gw
        return gw

    def _fast_polls(self, config: Path, wait_s: float = 0.0) -> None:
        sys.path.insert(0, str(ROOT))
        from agent.config import PollSettings, load_config, write_config

        current = load_config(config)
        poll = PollSettings(min_s=0.2, max_s=1.0, backoff_base_s=0.2, backoff_cap_s=1.0, wait_s=wait_s)
        write_config(config, replace(current, poll=poll))

    def _enrol(self, gw: Gateway, init: dict[str, Any]) -> None:
        se = init["se"]
        with self.api("sei") as c:
            r = c.post(
                "/orgs/sei/devices/",
                json={
                    "serial": gw.serial,
                    "kind": "meter",
                    "identity_public_key": init["identity_public_key"],
                    "key_id": init["key_id"],
                    "se_issuer": "sei",
                    "se_serial": se["serial"],
                },
            )
            assert r.status_code == 201, r.text
            gw.device_id = r.json()["id"]
            hand_over = {k: v for k, v in gw.isd_keys.items() if k != "purpose"}
            r = c.post(
                "/orgs/sei/secure-elements/",
                json={
                    "serial": se["serial"],
                    "kind": "se",
                    "cplc": se["cplc"],
                    "isd_aid": gw.isd_keys["isd_aid"],
                    "isd_keys": hand_over,
                    "kvn": gw.isd_keys["kvn"],
                    "i_param": gw.isd_keys["i_param"],
                    "sequence_counter": gw.isd_keys["sequence_counter"],
                    "device": {"manufacturer": "sei", "serial": gw.serial},
                },
            )
            assert r.status_code == 201, r.text

    def start_vpcd(self, gw: Gateway) -> None:
        assert gw.card_path is not None
        gw.vpcd = self.spawn(
            f"vpcd-{gw.name}",
            [sys.executable, "-m", "gp.card.vpcd", str(gw.card_path), "--port", str(PCSC_PORT)],
            env={"TESSERA_APDU_LOG": str(gw.apdu_log)},
        )
        wait_for(lambda: "card inserted" in self.log(f"vpcd-{gw.name}"), 20, "the card in vpcd")

    def start_agent(self, gw: Gateway, **env: str) -> subprocess.Popen[Any]:
        gw.runs += 1
        extra = {"TESSERA_APDU_LOG": str(gw.apdu_log)} if gw.backend == "soft" else {}
        gw.agent = self.spawn(
            f"agent-{gw.name}-{gw.runs}",
            [sys.executable, "-m", "agent", "run", "--config", str(gw.config)],
            env={**extra, **env},
        )
        return gw.agent

    def stop_gateway(self, gw: Gateway) -> None:
        stop_process(gw.agent)
        stop_process(gw.vpcd)


def _create_card(path: Path) -> dict[str, Any]:
    """A soft card for vpcd with fresh ISD keys, and the hand-over the issuer imports."""
    from gp.card import SoftCard
    from gp.scp03 import StaticKeys

    keys = StaticKeys(os.urandom(16), os.urandom(16), os.urandom(16))
    SoftCard.create(
        str(path), isd_aid=bytes.fromhex("A000000151000000"), keys=keys, key_version=0x30,
        i_param=0x70, sequence_counter=1,
    )  # fmt: skip
    return {
        "isd_aid": "A000000151000000",
        "kvn": 0x30,
        "i_param": 0x70,
        "sequence_counter": 1,
        "enc": keys.enc.hex().upper(),
        "mac": keys.mac.hex().upper(),
        "dek": keys.dek.hex().upper(),
    }


def _create_database(name: str) -> None:
    import psycopg

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True
    ) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')


def _drop_database(name: str) -> None:
    import psycopg

    with contextlib.suppress(Exception):
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True
        ) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start_pcscd() -> tuple[subprocess.Popen[Any] | None, str]:
    """pcscd with vpcd's readers, started here unless one already runs: (the one started, or None;
    why PC/SC is unavailable, or "")."""
    if not shutil.which("pcscd") or not os.path.exists("/etc/reader.conf.d/vpcd"):
        return None, "pcscd or vsmartcard-vpcd is not installed"
    try:
        import smartcard  # noqa: F401
    except ImportError:
        return None, "pyscard is not installed"
    if os.path.exists(PCSCD_SOCKET):
        return None, ""
    proc = subprocess.Popen(["pcscd", "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(PCSCD_SOCKET), 10, "pcscd")
    except AssertionError:
        stop_process(proc)
        return None, "pcscd did not come up"
    return proc, ""


@contextlib.contextmanager
def start_stack(tmp: Path, *, worker_concurrency: int = 0, **overrides: str) -> Iterator[Stack]:
    """The whole stack in ``tmp`` (module docstring); ``overrides`` are extra environment values,
    ``worker_concurrency`` > 0 a prefork worker instead of the solo one. Used by the ``stack``
    fixture and by ``bench/`` (which then runs without pytest)."""
    if not port_open(PG_HOST, PG_PORT):
        service_unavailable(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        service_unavailable("redis-server is not installed")
    for tool in ("daphne", "celery"):
        if not (Path(sys.executable).parent / tool).exists():
            service_unavailable(f"{tool} is not installed in the virtualenv")
    # Unique per stack: a module-scoped stack may run beside the session one in the same process (and
    # this module may be imported twice, as pytest's conftest and as tests.e2e.conftest).
    db_name = f"tessera_e2e_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        _create_database(db_name)
    except Exception as exc:  # noqa: BLE001 - no server, no rights: the services are unavailable
        service_unavailable(f"cannot create database {db_name}: {exc}")
    redis_port, web_port = free_port(), free_port()
    master_key = tmp / "vault-master.key"
    master_key.write_text(b64encode(secrets.token_bytes(32)).decode() + "\n")
    master_key.chmod(0o600)
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(tmp)),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": f"postgres://postgres@{PG_HOST}:{PG_PORT}/{db_name}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "TESSERA_VAR_DIR": str(tmp / "var"),
        "TESSERA_VAULT_MASTER_KEY_FILE": str(master_key),
        "TESSERA_JOB_NO_SHOW_SECONDS": "10",
        "TESSERA_JOB_STEP_SECONDS": "120",
        "TESSERA_JOB_RETRY_BASE_SECONDS": "1",
        "TESSERA_AGENT_POLL_SECONDS": "1",
        "TESSERA_AGENT_HOLD_MS": "1500",
        "TESSERA_SWEEP_SECONDS": "1",
        "LOG_LEVEL": "INFO",
        **overrides,
    }
    stack = Stack(
        tmp=tmp,
        env=env,
        base_url=f"http://127.0.0.1:{web_port}",
        db_name=db_name,
        redis_url=env["REDIS_URL"],
    )
    pcscd: subprocess.Popen[Any] | None = None
    try:
        stack.spawn(
            "redis",
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)],
        )  # fmt: skip
        wait_for(lambda: port_open("127.0.0.1", redis_port), 10, "redis-server")
        # Every command Redis receives (Celery messages with their arguments, channel-layer and cache
        # traffic), for the blindness search (tests/e2e/blindness.py): redis-monitor.log.
        stack.spawn("redis-monitor", ["redis-cli", "-p", str(redis_port), "monitor"])
        stack.manage("migrate", "--no-input", "-v0")
        stack.manage("shell", "-c", (Path(__file__).parent / "seed.py").read_text())
        stack.spawn(
            "daphne",
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(web_port),
                "portal.asgi:application",
            ],
        )
        stack.start_worker("worker", concurrency=worker_concurrency)
        stack.spawn(
            "beat",
            [sys.executable, "-m", "celery", "-A", "portal", "beat", "-l", "info",
             "-s", str(tmp / "beat-schedule")],
        )  # fmt: skip
        wait_for(lambda: port_open("127.0.0.1", web_port), 30, "daphne")
        with httpx.Client(base_url=stack.base_url) as c:
            for org, username in USERS.items():
                r = c.post("/api/v1/auth/token/", json={"username": username, "password": PASSWORD})
                assert r.status_code == 200, r.text
                stack.tokens[org] = r.json()["token"]
        pcscd, stack.pcscd_unavailable = _start_pcscd()
        yield stack
    finally:
        for gw in stack.gateways.values():
            stop_process(gw.agent)
            stop_process(gw.vpcd)
        for name in ("beat", "daphne"):
            stop_process(stack.procs.get(name))
        for proc in stack.procs.values():
            stop_process(proc)
        stop_process(pcscd)
        _drop_database(db_name)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("e2e")) as running:
        yield running
