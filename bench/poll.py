"""Idle agent polls per second against the real stack, next to a bare JSON view in the same run.

``.venv/bin/python -m bench.poll [--devices N] [--clients C] [--seconds S]``

Starts its own stack as the end-to-end tests do (a fresh PostgreSQL database, a private Redis,
daphne as shipped, a Celery worker; beat is stopped so nothing else touches the database), enrols
N devices with identity keys generated here, then, with C client processes (httpx, keep-alive):

1. ``GET /healthz`` for S seconds — the server's ceiling for a request that does nothing;
2. signed idle polls ``POST /agent/v1/exchange`` for S seconds, round robin over the devices.
   Each request is signed exactly as the agent signs (fresh nonce, RFC 9421), but *before* the
   timed window, so the figure is the server's cost and not the client's ECDSA.

Prints both rates, their ratio (target ≥ 0.5) and the database transactions and rows read per
idle poll, from ``pg_stat_database`` deltas over the poll window (target 0).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# A backend reports its statistics to pg_stat_database when it goes idle, at most every ~10 s
# (PostgreSQL 15+, PGSTAT_IDLE_INTERVAL): wait that long around each window.
STATS_FLUSH = 11.0
sys.path.insert(0, str(ROOT))


def _pem(key: Any) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization

    pub = key.public_key()
    pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, priv


def _client(kind: str, base_url: str, keys: list[str], seconds: float, ready: Any, go: Any, out: Any) -> None:
    import httpx
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from agent.httpsig import sign_request
    from agent.protocol import EXCHANGE_PATH, ExchangeRequest, encode

    body = encode(
        ExchangeRequest(agent={"version": "bench", "backend": "soft"}, results=(), health={}).to_json()
    )
    private = [load_pem_private_key(k.encode(), None) for k in keys]

    def sign(i: int) -> dict[str, str]:
        headers = sign_request(
            private_key=private[i % len(private)], method="POST", path=EXCHANGE_PATH, body=body
        )
        return {**headers, "Content-Type": "application/json"}

    signed = [sign(i) for i in range(int(seconds * 500) + 50)] if kind == "poll" else []
    done = errors = 0
    with httpx.Client(base_url=base_url, timeout=30) as http:
        http.get("/healthz")
        ready.put(1)
        go.wait()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            if kind == "poll":
                headers = signed[done] if done < len(signed) else sign(done)  # inline past the budget
                r = http.post(EXCHANGE_PATH, content=body, headers=headers)
            else:
                r = http.get("/healthz")
            done += 1
            if r.status_code != 200:
                errors += 1
    out.put((done, errors))


def _run(kind: str, base_url: str, keys: list[str], clients: int, seconds: float) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    out, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_client, args=(kind, base_url, keys[i::clients] or keys, seconds, ready, go, out))
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get()  # every client has signed its requests and connected
    go.set()
    total = errors = 0
    for _ in procs:
        n, e = out.get()
        total += n
        errors += e
    for p in procs:
        p.join()
    return total / seconds, errors


def _warm(base_url: str, keys: list[str]) -> None:
    """One poll per device: the endpoint caches each identity on first sight."""
    import httpx
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from agent.httpsig import sign_request
    from agent.protocol import EXCHANGE_PATH, ExchangeRequest, encode

    body = encode(
        ExchangeRequest(agent={"version": "bench", "backend": "soft"}, results=(), health={}).to_json()
    )
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for k in keys:
            key = load_pem_private_key(k.encode(), None)
            headers = sign_request(private_key=key, method="POST", path=EXCHANGE_PATH, body=body)
            r = http.post(
                EXCHANGE_PATH, content=body, headers={**headers, "Content-Type": "application/json"}
            )
            assert r.status_code == 200, r.text


def _pg_stats(db: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute("SELECT pg_stat_clear_snapshot()")
        row = c.execute(
            "SELECT xact_commit + xact_rollback, tup_returned + tup_fetched FROM pg_stat_database WHERE datname = %s",
            (db,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.poll")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    import httpx
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.e2e.conftest import start_stack, stop_process

    with tempfile.TemporaryDirectory(prefix="tessera-bench-poll-") as tmp:
        with start_stack(Path(tmp), TESSERA_AGENT_POLL_SECONDS="300", LOG_LEVEL="WARNING") as stack:
            stop_process(stack.procs.get("beat"))  # nothing but the polls may touch the database
            keys: list[str] = []
            with httpx.Client(base_url=stack.base_url + "/api/v1", timeout=30) as api:
                api.headers["Authorization"] = f"Token {stack.tokens['sei']}"
                for n in range(args.devices):
                    key = ec.generate_private_key(ec.SECP256R1())
                    pem, private = _pem(key)
                    r = api.post("/orgs/sei/devices/", json={"serial": f"BENCH-{n:05d}", "kind": "meter",
                                                            "identity_public_key": pem})  # fmt: skip
                    assert r.status_code == 201, r.text
                    keys.append(private)
            bare, bare_errors = _run("bare", stack.base_url, keys, args.clients, args.seconds)
            # warm the identity cache: one poll per device
            _warm(stack.base_url, keys)
            time.sleep(STATS_FLUSH)
            # the same window with no polls: what the other processes do on their own
            b0 = _pg_stats(stack.db_name)
            time.sleep(args.seconds + STATS_FLUSH)
            b1 = _pg_stats(stack.db_name)
            tx0, rows0 = _pg_stats(stack.db_name)
            polls, poll_errors = _run("poll", stack.base_url, keys, args.clients, args.seconds)
            time.sleep(STATS_FLUSH)
            tx1, rows1 = _pg_stats(stack.db_name)
            n_polls = polls * args.seconds
    load = os.getloadavg()[0]
    print(f"bench.poll: daphne (1 process), {args.devices} devices, {args.clients} client processes, "
          f"{args.seconds:g} s per figure, load average {load:.2f}, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"  bare JSON view GET /healthz : {bare:8.0f} req/s   ({bare_errors} errors)")
    print(f"  signed idle polls           : {polls:8.0f} polls/s ({poll_errors} errors)")
    ratio = polls / bare if bare else 0.0
    print(
        f"  ratio polls / bare          : {ratio:8.3f}   target >= 0.5 -> {'PASS' if ratio >= 0.5 else 'FAIL'}"
    )
    base_tx, base_rows = b1[0] - b0[0], b1[1] - b0[1]
    net_tx, net_rows = (tx1 - tx0) - base_tx, (rows1 - rows0) - base_rows
    per_tx = net_tx / n_polls if n_polls else float("nan")
    print(f"  DB transactions per poll    : {per_tx:8.4f}   ({tx1 - tx0} in the poll window, {base_tx} in an "
          f"idle window of the same length; {n_polls:.0f} polls) target 0 -> "
          f"{'PASS' if per_tx < 0.01 else 'FAIL'}")  # fmt: skip
    print(
        f"  DB rows read per poll       : {net_rows / max(n_polls, 1):8.4f}   ({rows1 - rows0} vs {base_rows} idle)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
