"""Latency of create_security_domain jobs for online agents, request to succeeded.

``.venv/bin/python -m bench.job_latency [--jobs N] [--gateways G] [--mode precomputed|interactive|both]``

Starts its own stack as the end-to-end tests do (fresh PostgreSQL database, private Redis, daphne,
one Celery worker, beat), G soft-card gateways (``python -m agent init`` + enrolment through the
API + ``python -m agent run``, the server's poll delay at its minimum of 1 s), then requests N jobs
through the API (the TSM on the SE issuer's behalf, for the provider), spread evenly over the
gateways and paced so that a gateway has at most one job at a time. Per job, from the database:

- request → succeeded (``finished_at − created_at``): what a user waits;
- first dispatch → succeeded: the engine and the exchange alone, without the wait for the
  device's next idle poll (at most the poll delay: an idle agent is not woken up).

Prints p50 / p95 / max of both (target: p95 < 1 s on loopback).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and of its live children (a prefork worker's pool)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _cpu_by_role(stack: Any, gateways: list[Any]) -> dict[str, float]:
    roles = {
        name: _cpu_seconds(p.pid) for name, p in stack.procs.items() if name in ("daphne", "worker", "redis")
    }
    roles["agents"] = sum(_cpu_seconds(gw.agent.pid) for gw in gateways if gw.agent is not None)
    roles["bench (this process)"] = time.process_time()
    return roles


TERMINAL = ("succeeded", "failed", "rejected", "timed_out", "canceled", "expired")


def _measure(stack: Any, gateways: list[Any], jobs: int, mode: str, tag: str) -> dict[str, Any]:
    ids: list[str] = []
    per_gw = -(-jobs // len(gateways))
    with stack.api("tsm") as api:
        for round_ in range(per_gw):
            for g, gw in enumerate(gateways):
                if len(ids) >= jobs:
                    break
                aid = f"A00000015153{tag}{g:02X}{round_:04X}"
                r = api.post(
                    f"/orgs/tsm/devices/{gw.device_id}/jobs/",
                    params={"on_behalf_of": "sei"},
                    json={
                        "kind": "create_security_domain",
                        "params": {"aid": aid, "owner": "supplier"},
                        "mode": mode,
                    },
                )
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            # one job per gateway at a time: wait for this round before the next (one list request
            # per poll, so the bench's own polling costs the server little; latency is read from
            # the database afterwards, not from this loop)
            round_ids = set(ids[-len(gateways) :])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                listed = api.get(
                    "/orgs/tsm/jobs/", params={"on_behalf_of": "sei", "limit": 2 * len(gateways)}
                ).json()["results"]
                done = {j["id"] for j in listed if j["state"] in TERMINAL}
                if round_ids <= done:
                    break
                time.sleep(0.1)
    rows = stack.query(
        "from django.db.models import Min\n"
        "from jobs.models import Job\n"
        f"qs = Job.objects.filter(pk__in={ids!r}).annotate(first=Min('steps__dispatched_at'))\n"
        "out = [(j.state, (j.finished_at - j.created_at).total_seconds() if j.finished_at else None,\n"
        "        (j.finished_at - j.first).total_seconds() if j.finished_at and j.first else None) for j in qs]\n"
    )
    ok = [r for r in rows if r[0] == "succeeded"]
    return {
        "jobs": len(rows),
        "succeeded": len(ok),
        "total": [r[1] for r in ok],
        "engine": [r[2] for r in ok if r[2] is not None],
    }


def _report(mode: str, result: dict[str, Any]) -> None:
    print(f"  mode {mode}: {result['succeeded']}/{result['jobs']} succeeded in {result.get('wall', 0):.1f} s")
    if result.get("cpu"):
        parts = ", ".join(f"{k} {v:.0f}" for k, v in result["cpu"].items())
        print(f"    CPU ms per job (PostgreSQL not counted): {parts}")
    for label, key in (("request -> succeeded", "total"), ("dispatch -> succeeded", "engine")):
        values = result[key]
        if not values:
            continue
        p50, p95 = statistics.median(values), _pct(values, 95)
        verdict = "PASS" if p95 < 1.0 else "FAIL"
        print(f"    {label:22}: p50 {p50 * 1000:6.0f} ms  p95 {p95 * 1000:6.0f} ms  max {max(values) * 1000:6.0f} ms"
              f"   target p95 < 1 s -> {verdict}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.job_latency")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--gateways", type=int, default=8)
    parser.add_argument("--mode", choices=["precomputed", "interactive", "both"], default="both")
    parser.add_argument(
        "--wait", type=float, default=20.0, help="agents' long-poll wait_s (0: plain polling)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=0, help="prefork worker processes (0: one solo worker)"
    )
    args = parser.parse_args()

    from tests.e2e.conftest import start_stack

    modes = ["precomputed", "interactive"] if args.mode == "both" else [args.mode]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tessera-bench-jobs-") as tmp:
        with start_stack(
            Path(tmp),
            worker_concurrency=args.concurrency,
            LOG_LEVEL="WARNING",
            TESSERA_JOB_NO_SHOW_SECONDS="600",
        ) as stack:
            gateways = [
                stack.gateway(f"bench-{n}", f"BENCH-GW-{n:03d}", wait_s=args.wait)
                for n in range(args.gateways)
            ]
            for gw in gateways:
                stack.start_agent(gw)
            time.sleep(2.0)  # every agent has polled once
            for i, mode in enumerate(modes):
                before, started = _cpu_by_role(stack, gateways), time.monotonic()
                results[mode] = _measure(stack, gateways, args.jobs, mode, tag=f"B{i}")
                after, wall = _cpu_by_role(stack, gateways), time.monotonic() - started
                results[mode]["cpu"] = {
                    k: (after[k] - before[k]) / results[mode]["jobs"] * 1000 for k in after
                }
                results[mode]["wall"] = wall
    worker = f"prefork x{args.concurrency}" if args.concurrency else "solo"
    polling = f"long poll wait_s {args.wait:g}" if args.wait else "plain polling every 1 s"
    print(f"bench.job_latency: {args.jobs} create_security_domain jobs per mode, {args.gateways} soft-card agents "
          f"(python -m agent run, {polling}), daphne + 1 Celery worker ({worker}), hold 1500 ms, "
          f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")  # fmt: skip
    for mode, result in results.items():
        _report(mode, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
