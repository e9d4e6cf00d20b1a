"""Pieces of ``bench.switch_campaign``: a private PostgreSQL, the stack on it, the meters, the swarm.

- :func:`private_postgres` — ``initdb`` into a temporary directory (as the ``postgres`` user when
  run as root) and a ``postgres`` of its own on a free port, with ``pg_stat_statements`` preloaded
  so a phase can count the SQL statements every process sent. The shared server on 5432 is never
  touched.
- :func:`bench_stack` — the stack of ``tests.e2e.conftest.start_stack`` (private ``redis-server``,
  ``manage.py migrate`` + the e2e seed, daphne as shipped, Celery beat) on that PostgreSQL, with
  ``workers`` Celery worker processes (each ``--pool=solo``, a node of its own).
- :func:`make_meters` — N simulated meters built here, without Django: a device identity key
  (P-256), an in-memory :class:`~gp.card.SoftCard` with fresh ISD keys, and the old provider's
  security domain created *on the card* through a real SCP03 session of the ISD (the same
  INSTALL / PUT KEY script ``jobs.compiler.payloads.create_security_domain`` compiles). The card
  state travels to the swarm processes serialised; the public parts are recorded in the portal
  by :data:`SEED_METERS` as the demo seed does (``devices.services.device_register``,
  ``keys.services.secure_element_enrol`` with the card's sequence counter,
  ``devices.services.security_domain_record`` of the old SD, an active ``Contract``).
- :func:`swarm_process` — one process running many gateways on one asyncio loop (httpx): each
  signs its exchanges exactly as ``python -m agent run`` does (``agent.httpsig``, RFC 9421 with a
  fresh nonce), long-polls (``wait``), runs the work items on its card, stopping at the first
  unexpected status word, and reports the results on its next exchange.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ISD_AID = "A000000151000000"
OLD_SD = "A0000001515350534F4C44"  # the old provider's SD on every meter ("SPSOLD")
SERVICE = "Electricity supply"
# pg_stat_statements shows the RI trigger's "SELECT 1 FROM ONLY …" with the constant normalised to $1.
FK_CHECK = re.compile(r"^\s*SELECT\s+(?:1|\$\d+)\s+FROM\s+ONLY\s", re.IGNORECASE)
TX_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET ", "SHOW ")


# --- PostgreSQL of its own ----------------------------------------------------------------------


def _pg_bin() -> Path:
    if (PG_BIN / "initdb").exists():
        return PG_BIN
    found = shutil.which("initdb")
    if found is None:
        raise SystemExit("initdb not found (apt-get install postgresql)")
    return Path(found).parent


@contextlib.contextmanager
def private_postgres(port: int, keep_log: Path | None = None) -> Iterator[subprocess.Popen[Any]]:
    """A throw-away PostgreSQL cluster on ``127.0.0.1:port``; yields its postmaster process.
    ``keep_log``: where to copy its log when it stops."""
    bin_dir = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix="tessera-bench-pg-"))
    data = base / "data"
    user: str | None = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    base.chmod(0o755)
    proc: subprocess.Popen[Any] | None = None
    log = (base / "postgres.log").open("ab")
    try:
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--no-sync"],
            check=True, capture_output=True, user=user,
        )  # fmt: skip
        proc = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(base),
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
             "-c", "shared_preload_libraries=pg_stat_statements",
             "-c", "pg_stat_statements.max=20000", "-c", "pg_stat_statements.track=top",
             "-c", "shared_buffers=256MB", "-c", "log_lock_waits=on"],
            stdout=log, stderr=subprocess.STDOUT, user=user,
        )  # fmt: skip
        from tests.e2e.conftest import wait_for

        wait_for(lambda: _pg_ready(port) or proc.poll() is not None, 30, "private PostgreSQL")
        if proc.poll() is not None:
            raise SystemExit(
                f"private PostgreSQL did not start: {(base / 'postgres.log').read_text()[-2000:]}"
            )
        yield proc
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if keep_log is not None and (base / "postgres.log").exists():
            keep_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(base / "postgres.log", keep_log)
        shutil.rmtree(base, ignore_errors=True)


def _pg_ready(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
        ):
            return True
    except psycopg.OperationalError:
        return False


def pg_connect(port: int, db: str) -> Any:
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=db, autocommit=True)


def pg_statements_reset(port: int, db: str) -> None:
    with pg_connect(port, db) as c:
        c.execute("SELECT pg_stat_statements_reset()")


def _table(word: str) -> str:
    """``"public"."jobs_job"`` or ``"jobs_job"`` → ``jobs_job``."""
    return word.strip('"(').split('"."')[-1].strip('"')


def pg_statements(port: int, db: str) -> dict[str, int]:
    """Statements executed in ``db`` since the last reset: all, transaction control, the rest."""
    with pg_connect(port, db) as c:
        rows = c.execute(
            "SELECT s.query, s.calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = %s",
            (db,),
        ).fetchall()
    total = sum(int(n) for _, n in rows)
    control = sum(int(n) for q, n in rows if q.lstrip().upper().startswith(TX_CONTROL))
    # PostgreSQL's own foreign-key checks (RI triggers; Django's constraints are deferred, so they
    # run at COMMIT, at the top level, and pg_stat_statements counts them): not sent by the portal.
    fk = sum(int(n) for q, n in rows if FK_CHECK.match(q))
    by_table: dict[str, int] = {}
    for query, calls in rows:
        words = " ".join(query.split()).split(" ")
        verb = words[0].upper()
        table = ""
        for i, w in enumerate(words[:-1]):
            if w.upper() in ("FROM", "INTO") or (w.upper() == "UPDATE" and i == 0):
                table = _table(words[i + 1])
                break
        key = f"{verb} {table}".strip()
        if FK_CHECK.match(query):
            key = "FK check " + (_table(words[4]) if len(words) > 4 else "")
        elif verb.startswith(TX_CONTROL):
            key = "transaction control"
        by_table[key] = by_table.get(key, 0) + int(calls)
    top = sorted(by_table.items(), key=lambda kv: -kv[1])[:12]
    return {"all": total, "tx_control": control, "fk_checks": fk, "sql": total - control - fk, "top": top}


# --- the stack ----------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_stack(tmp: Path, *, pg_port: int, workers: int, **overrides: str) -> Iterator[Any]:
    """``tests.e2e.conftest.start_stack``'s processes on the private PostgreSQL, ``workers`` solo
    Celery workers. Yields the ``Stack`` (``stack.pg_port`` added)."""
    import httpx

    from tests.e2e.conftest import PASSWORD, USERS, Stack, free_port, port_open, stop_process, wait_for

    db_name = "tessera_bench"
    with pg_connect(pg_port, "postgres") as c:
        c.execute(f'CREATE DATABASE "{db_name}"')
    with pg_connect(pg_port, db_name) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    redis_port, web_port = free_port(), free_port()
    master_key = tmp / "vault-master.key"
    master_key.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    master_key.chmod(0o600)
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(tmp)),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{pg_port}/{db_name}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "TESSERA_VAR_DIR": str(tmp / "var"),
        "TESSERA_VAULT_MASTER_KEY_FILE": str(master_key),
        "TESSERA_JOB_NO_SHOW_SECONDS": "600",
        "TESSERA_JOB_STEP_SECONDS": "300",
        "TESSERA_JOB_RETRY_BASE_SECONDS": "1",
        "TESSERA_AGENT_POLL_SECONDS": "5",
        "TESSERA_AGENT_HOLD_MS": "1500",
        "TESSERA_SWEEP_SECONDS": "15",
        "LOG_LEVEL": "WARNING",
        **overrides,
    }
    stack = Stack(tmp=tmp, env=env, base_url=f"http://127.0.0.1:{web_port}", db_name=db_name,
                  redis_url=env["REDIS_URL"])  # fmt: skip
    stack.pg_port = pg_port  # type: ignore[attr-defined]
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not installed")
    try:
        stack.spawn(
            "redis",
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp), "--maxclients", "10000"],
        )  # fmt: skip
        wait_for(lambda: port_open("127.0.0.1", redis_port), 10, "redis-server")
        stack.manage("migrate", "--no-input", "-v0")
        stack.manage("shell", "-c", (ROOT / "tests" / "e2e" / "seed.py").read_text())
        stack.spawn("daphne", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port),
                               "portal.asgi:application"])  # fmt: skip
        for n in range(workers):
            stack.start_worker(f"worker{n + 1}")
        stack.spawn("beat", [sys.executable, "-m", "celery", "-A", "portal", "beat", "-l", "warning",
                             "-s", str(tmp / "beat-schedule")])  # fmt: skip
        wait_for(lambda: port_open("127.0.0.1", web_port), 30, "daphne")
        with httpx.Client(base_url=stack.base_url) as c:
            for org, username in USERS.items():
                r = c.post("/api/v1/auth/token/", json={"username": username, "password": PASSWORD})
                assert r.status_code == 200, r.text
                stack.tokens[org] = r.json()["token"]
        yield stack
    finally:
        for name in ("beat", "daphne"):
            stop_process(stack.procs.get(name))
        for proc in stack.procs.values():
            stop_process(proc)


def run_django(stack: Any, code: str, *, timeout: float, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` (which sets ``out``) in ``manage.py shell`` without the Stack's 180 s limit;
    its stderr goes to ``<tmp>/driver.log``. Returns ``out`` (JSON)."""
    script = code + "\nimport json as _j\nprint('@@' + _j.dumps(out, default=str))\n"
    with (stack.tmp / "driver.log").open("ab") as err:
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=ROOT, env={**stack.env, **(env or {})}, stdout=subprocess.PIPE, stderr=err, timeout=timeout,
        )  # fmt: skip
    text = done.stdout.decode(errors="replace")
    if done.returncode:
        raise SystemExit(f"driver failed ({done.returncode}):\n{text[-3000:]}\n{stack.log('driver')}")
    line = next(ln for ln in text.splitlines() if ln.startswith("@@"))
    return json.loads(line[2:])


# --- the meters ---------------------------------------------------------------------------------


def _card_with_old_sd() -> tuple[Any, Any, int]:
    """An in-memory soft card with fresh ISD keys and the old provider's SD created on it through
    an ISD SCP03 session; (card, ISD keys, the ISD key set's next sequence counter)."""
    from gp.card import SoftCard
    from gp.commands import Privileges
    from gp.scp03 import HostSession, StaticKeys
    from jobs.compiler import payloads

    keys = StaticKeys(enc=os.urandom(16), mac=os.urandom(16), dek=os.urandom(16))
    card = SoftCard.create(None, isd_aid=bytes.fromhex(ISD_AID), keys=keys, key_version=0x30, i_param=0x70,
                           sequence_counter=1)  # fmt: skip
    select = bytes.fromhex("00A4040008" + ISD_AID + "00")
    if card.transmit(select)[-2:] != b"\x90\x00":
        raise SystemExit("meter card: SELECT ISD failed")
    host = HostSession(keys, security_level=0x33, host_challenge=os.urandom(8), key_version=0x30)
    answer = card.transmit(host.initialize_update())
    if answer[-2:] != b"\x90\x00" or card.transmit(host.external_authenticate(answer[:-2])) != b"\x90\x00":
        raise SystemExit("meter card: the ISD session did not open")
    old_keys = StaticKeys(enc=os.urandom(16), mac=os.urandom(16), dek=os.urandom(16))
    script = payloads.create_security_domain(
        isd_keys=keys, ssd_aid=bytes.fromhex(OLD_SD), privileges=Privileges.SECURITY_DOMAIN,
        new_keys=old_keys, new_kvn=0x30,
    )  # fmt: skip
    for command in script:
        sw = host.unwrap(card.transmit(host.wrap(command.apdu)))[-2:]
        if sw != b"\x90\x00":
            raise SystemExit(f"meter card: {command.label} answered {sw.hex()}")
    return card, keys, card.sequence_counter(bytes.fromhex(ISD_AID), 0x30)


def make_meters(count: int, path: Path) -> list[dict[str, Any]]:
    """``count`` meters written to ``path`` (JSON, private keys and card states included: the
    swarm's input, in the bench's temporary directory); returns the portal's part of each."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from gp.card.softcard import _serialise

    meters, public = [], []
    for n in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        card, keys, counter = _card_with_old_sd()
        pem = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        serial = f"SWB-{n:05d}"
        se_serial = f"5357{n:08X}"
        meters.append({
            "serial": serial,
            "private_pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode(),
            "card": base64.b64encode(_serialise(card._state)).decode(),
        })  # fmt: skip
        public.append({
            "serial": serial, "se_serial": se_serial, "public_pem": pem,
            "enc": keys.enc.hex(), "mac": keys.mac.hex(), "dek": keys.dek.hex(), "counter": counter,
        })  # fmt: skip
    path.write_text(json.dumps(meters))
    path.chmod(0o600)
    return public


# Run in ``manage.py shell`` with BENCH_METERS naming the public part: orgs of the bench (the
# subscriber), the devices, their SEs with the ISD keys, the old SD and the contract.
SEED_METERS = (
    f"ISD, OLD, SERVICE = {ISD_AID!r}, {OLD_SD!r}, {SERVICE!r}\n"
    + r"""
import json, os
from django.contrib.auth import get_user_model
from django.db import transaction
from devices.services import device_register, security_domain_record
from keys.services import secure_element_enrol, static_keys_from_hex
from tenants.access import Actor
from tenants.models import Contract, MemberRole, Membership, Organisation, OrgRole, OrgStatus

meters = json.loads(open(os.environ["BENCH_METERS"]).read())
sei = Organisation.objects.get(slug="sei")
supplier = Organisation.objects.get(slug="supplier")
owner = Membership.objects.filter(org=sei, role=MemberRole.OWNER).first().user
actor = Actor(user=owner, org=sei, member_role=MemberRole.OWNER)
homes, _ = Organisation.objects.get_or_create(
    slug="homes", defaults=dict(name="Homes Housing Co.", roles=[OrgRole.SERVICE_SUBSCRIBER],
                                status=OrgStatus.ACTIVE, contact_email="homes@example.test"))
for i in range(0, len(meters), 50):
    with transaction.atomic():
        for m in meters[i:i + 50]:
            device = device_register(actor=actor, serial=m["serial"], kind="meter", subscriber=homes,
                                     identity_public_key=m["public_pem"], se_issuer="sei", se_serial=m["se_serial"])
            enrolment = secure_element_enrol(
                actor=actor, serial=m["se_serial"], kind="se", isd_aid=ISD,
                keys=static_keys_from_hex(enc=m["enc"], mac=m["mac"], dek=m["dek"]), kvn=0x30, i_param=0x70,
                sequence_counter=m["counter"], device_manufacturer="sei", device_serial=m["serial"])
            security_domain_record(actor=actor, secure_element=enrolment.secure_element, aid=OLD,
                                   owner=supplier, privileges=["security_domain"])
            Contract.objects.create(subscriber=homes, provider=supplier, device=device, service=SERVICE,
                                    switch_allowed=True, sd_aid=OLD, consent_required=False)
out = {"devices": len(meters)}
"""
)


# --- the swarm ----------------------------------------------------------------------------------


def swarm_process(base_url: str, meters_file: str, indices: list[int], wait_s: float, ready: Any,
                  stop: Any, out: Any) -> None:  # fmt: skip
    """Entry point of one swarm process (multiprocessing, spawn)."""
    sys.path.insert(0, str(ROOT))
    stats = asyncio.run(_swarm(base_url, meters_file, indices, wait_s, ready, stop))
    out.put(stats)


async def _swarm(base_url: str, meters_file: str, indices: list[int], wait_s: float, ready: Any,
                 stop: Any) -> dict[str, Any]:  # fmt: skip
    import httpx
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from gp.card import SoftCard
    from gp.card.state import CardState

    meters = json.loads(Path(meters_file).read_text())
    gateways = []
    for i in indices:
        m = meters[i]
        state = CardState.from_dict(json.loads(base64.b64decode(m["card"])))
        gateways.append((m["serial"], load_pem_private_key(m["private_pem"].encode(), None),
                         SoftCard(state, path=None, state_key=None)))  # fmt: skip
    del meters
    stats = {"gateways": len(gateways), "exchanges": 0, "with_work": 0, "items": 0, "failed_items": 0,
             "errors": 0, "error_sample": ""}  # fmt: skip
    limits = httpx.Limits(max_connections=len(gateways) + 10, max_keepalive_connections=len(gateways) + 10)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=wait_s + 60) as client:
        stopping = asyncio.Event()

        async def watch_stop() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.2)
            stopping.set()

        tasks = [asyncio.create_task(_gateway(client, gw, wait_s, stats, stopping, n / max(len(gateways), 1) * 5))
                 for n, gw in enumerate(gateways)]  # fmt: skip
        ready.put(len(gateways))
        await watch_stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return stats


async def _gateway(client: Any, gw: tuple[str, Any, Any], wait_s: float, stats: dict[str, Any],
                   stopping: asyncio.Event, delay: float) -> None:  # fmt: skip
    import httpx

    from agent.httpsig import sign_request
    from agent.protocol import (
        EXCHANGE_PATH,
        ExchangeRequest,
        ExchangeResponse,
        WorkResult,
        decode,
        encode,
        sw_matches,
    )

    serial, key, card = gw
    pending: list[WorkResult] = []
    await asyncio.sleep(delay)  # spread the first polls
    while not stopping.is_set():
        request = ExchangeRequest(agent={"version": "bench-swarm", "backend": "soft"}, results=tuple(pending),
                                  health={}, wait=wait_s)  # fmt: skip
        body = encode(request.to_json())
        headers = sign_request(private_key=key, method="POST", path=EXCHANGE_PATH, body=body)
        try:
            r = await client.post(
                EXCHANGE_PATH, content=body, headers={**headers, "Content-Type": "application/json"}
            )
        except httpx.HTTPError as e:
            stats["errors"] += 1
            stats["error_sample"] = stats["error_sample"] or f"{serial}: {type(e).__name__} {e}"
            await asyncio.sleep(1 + random.random())
            continue
        stats["exchanges"] += 1
        if r.status_code != 200:
            stats["errors"] += 1
            stats["error_sample"] = stats["error_sample"] or f"{serial}: HTTP {r.status_code} {r.text[:200]}"
            await asyncio.sleep(1 + random.random())
            continue
        answer = ExchangeResponse.from_json(decode(r.content))
        acked = set(answer.acks)
        pending = [p for p in pending if p.item not in acked]
        if answer.work:
            stats["with_work"] += 1
        for item in answer.work:
            responses: list[bytes] = []
            status = "completed"
            for command in item.commands:
                rapdu = card.transmit(command.apdu)
                responses.append(rapdu)
                if command.expect and not sw_matches(int.from_bytes(rapdu[-2:], "big"), command.expect):
                    status = "failed"
                    break
            stats["items"] += 1
            stats["failed_items"] += status != "completed"
            pending.append(WorkResult(item=item.item, status=status, responses=tuple(responses)))
        if not answer.work and not pending and answer.poll_after > 0:
            await asyncio.sleep(answer.poll_after)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")
    )


def now() -> float:
    return time.monotonic()
