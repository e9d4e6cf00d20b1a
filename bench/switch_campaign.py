"""Provider switch of many simulated meters, against the same number of no-op jobs (issue 6).

``.venv/bin/python -m bench.switch_campaign [--meters 1000] [--workers 2] [--swarms 2] [--window W]``
(``--meters 50``: a smoke run of a few minutes.)

Real processes (``bench._swarm``): a PostgreSQL of its own (initdb, ``pg_stat_statements``), a
private ``redis-server``, daphne as shipped, ``--workers`` Celery worker processes (``--pool=solo``
each), Celery beat (the jobs sweeper, with the switch sweeper as its hook). N meters, each a
device identity key and an in-memory software SE whose ISD keys the SE issuer ("sei") enrolled,
with the old provider's ("supplier") security domain on the card and an active contract for it
(a lease: ``consent_required`` False, so the new provider's jobs wait for no consent). A swarm of
``--swarms`` processes runs the N gateways (asyncio + httpx, every exchange signed as the agent
signs it, long poll ``wait`` = ``--wait`` s; the server holds an idle exchange up to that and wakes
it when a step is ready).

Phase 1 — the switch: every meter moves from "supplier" to "provider" (keys mode ``portal``: the
new provider's keys generated into its vault by a key rotation; no application). Driven either by
the campaigns app when it exists (``--driver campaign``) or by direct
``switches.services.switch_request`` calls from the SE issuer (``--driver direct``), at most
``--window`` switches in flight (and ``--rate`` requests/s if set). Per device: request →
completed (``Switch.created_at`` → ``finished_at``).

Phase 2 — the ceiling: the same engine and processes run ``jobs per switch`` × N ``read_status``
jobs on the ISDs (the cheapest real job: one SCP03 session, GET STATUS / GET DATA), chained per
device as the saga chains its jobs (the next one requested when the previous ended), with the
same window. Jobs/min, and divided by jobs per switch, the devices/min the engine could switch if
the saga cost nothing on top of its jobs.

SQL: ``pg_stat_statements`` is reset before each phase and read after it (every process counts:
daphne, workers, beat, the driver); statements per switched device and per no-op job, with and
without transaction control (BEGIN / COMMIT / SAVEPOINT / RELEASE).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _swarm as W  # noqa: E402

# --- drivers (run in ``manage.py shell``) -------------------------------------------------------

_COMMON = r"""
import os, time
from collections import deque
from devices.models import Device
from tenants.access import Actor
from tenants.models import MemberRole, Membership, Organisation
sei = Organisation.objects.get(slug="sei")
actor = Actor(user=Membership.objects.filter(org=sei, role=MemberRole.OWNER).first().user, org=sei,
              member_role=MemberRole.OWNER)
window, rate = int(os.environ["BENCH_WINDOW"]), float(os.environ["BENCH_RATE"])
timeout = float(os.environ["BENCH_TIMEOUT"])
devices = deque(Device.objects.filter(serial__startswith="SWB-").order_by("serial"))
started = time.monotonic()
sent = 0
def may_send(inflight):
    return len(inflight) < window and (rate <= 0 or sent < rate * (time.monotonic() - started) + 1)
"""

DRIVE_SWITCHES = (
    _COMMON
    + r"""
from switches.models import FINAL_SWITCH_STATES, Switch
from django.db import OperationalError
from switches.services import switch_request
inflight, ids, refused, retried, retry_sample = set(), [], [], 0, ""
while (devices or inflight) and time.monotonic() - started < timeout:
    if inflight:
        inflight -= set(Switch.objects.filter(pk__in=inflight, state__in=FINAL_SWITCH_STATES).values_list("pk", flat=True))
    while devices and may_send(inflight):
        device = devices.popleft()
        try:
            s = switch_request(actor=actor, device=device, new_provider="provider", keys_mode="portal")
        except OperationalError as e:  # a deadlock victim (see bench/README.md): ask again later
            retried += 1
            retry_sample = retry_sample or f"{device.serial}: {str(e).splitlines()[0]}"
            devices.append(device)
            continue
        except Exception as e:
            refused.append(f"{device.serial}: {type(e).__name__}: {e}")
            continue
        inflight.add(s.pk)
        ids.append(str(s.pk))
        sent += 1
    time.sleep(0.2)
out = {"ids": ids, "unfinished": len(inflight), "refused": refused[:5], "refused_count": len(refused),
       "retried": retried, "retry_sample": retry_sample}
"""
)

DRIVE_NOOPS = (
    _COMMON
    + r"""
from jobs.models import TERMINAL_STATES, Job
from jobs.services import job_request
per_device = int(os.environ["BENCH_JOBS_PER_DEVICE"])
inflight, ids, left = {}, [], {}
def request(device):
    global sent
    job = job_request(actor=actor, device=device, kind="read_status", params={})
    inflight[job.pk] = device
    ids.append(str(job.pk))
    left[device.pk] -= 1
    sent += 1
while (devices or inflight) and time.monotonic() - started < timeout:
    if inflight:
        for pk in Job.objects.filter(pk__in=list(inflight), state__in=TERMINAL_STATES).values_list("pk", flat=True):
            device = inflight.pop(pk)
            if left[device.pk] > 0:
                request(device)
    while devices and may_send(inflight):
        device = devices.popleft()
        left[device.pk] = per_device
        request(device)
    time.sleep(0.2)
out = {"ids": ids, "unfinished": len(inflight)}
"""
)

SWITCH_RESULTS = r"""
import json, os
from collections import Counter
from jobs.models import Job, JobStep
from switches.models import Switch
if os.environ.get("BENCH_CAMPAIGN"):
    switches = Switch.objects.filter(campaign_id=os.environ["BENCH_CAMPAIGN"])
else:
    switches = Switch.objects.filter(pk__in=json.loads(open(os.environ["BENCH_IDS"]).read()))
rows = list(switches.values_list("state", "created_at", "finished_at", "log", "error_code"))
job_ids = [e["job"] for r in rows for e in r[3] if e.get("job")]
done = [r for r in rows if r[0] == "completed"]
out = {
    "states": dict(Counter(r[0] for r in rows)),
    "errors": dict(Counter(r[4] for r in rows if r[4])),
    "durations": [(r[2] - r[1]).total_seconds() for r in done],
    "first": min(r[1] for r in rows).timestamp() if rows else None,
    "last": max(r[2] for r in done).timestamp() if done else None,
    "jobs": len(job_ids),
    "job_kinds": dict(Counter(Job.objects.filter(pk__in=job_ids).values_list("kind", flat=True))),
    "steps": JobStep.objects.filter(job_id__in=job_ids).count(),
}
"""

NOOP_RESULTS = r"""
import json, os
from collections import Counter
from jobs.models import Job, JobStep
ids = json.loads(open(os.environ["BENCH_IDS"]).read())
rows = list(Job.objects.filter(pk__in=ids).values_list("state", "created_at", "finished_at", "device_id"))
done = [r for r in rows if r[0] == "succeeded"]
per_device = {}
for r in done:
    first, last = per_device.get(r[3], (r[1], r[2]))
    per_device[r[3]] = (min(first, r[1]), max(last, r[2]))
out = {
    "states": dict(Counter(r[0] for r in rows)),
    "durations": [(r[2] - r[1]).total_seconds() for r in done],
    "device_durations": [(b - a).total_seconds() for a, b in per_device.values()],
    "first": min(r[1] for r in rows).timestamp() if rows else None,
    "last": max(r[2] for r in done).timestamp() if done else None,
    "steps": JobStep.objects.filter(job_id__in=ids).count(),
}
"""


# --- the run ------------------------------------------------------------------------------------


def _cpu(stack: Any, pg: Any, swarms: list[Any]) -> dict[str, float]:
    from bench.job_latency import _cpu_seconds

    roles = {"daphne": _cpu_seconds(stack.procs["daphne"].pid)}
    roles["workers"] = sum(_cpu_seconds(p.pid) for n, p in stack.procs.items() if n.startswith("worker"))
    roles["beat"] = _cpu_seconds(stack.procs["beat"].pid)
    roles["redis"] = _cpu_seconds(stack.procs["redis"].pid)
    roles["postgres"] = _cpu_seconds(pg.pid)
    roles["swarm"] = sum(_cpu_seconds(p.pid) for p in swarms)
    return roles


def _drive_campaign(stack: Any, window: int, rate: float, timeout: float) -> dict[str, Any]:
    """One campaign over every meter through the API, as the SE issuer; waits for its end."""
    with stack.api("sei") as api:
        r = api.post(
            "/orgs/sei/campaigns/",
            json={
                "name": "bench.switch_campaign",
                "new_provider": "provider",
                "filter": {"old_provider": "supplier"},
                "keys_mode": "portal",
                "rate_per_minute": int(rate * 60) if rate else 100_000,
                "max_in_flight": window,
                "success_threshold": 0.0,  # one group: never held
                "error_threshold": 1.0,  # never stopped: the bench reports every error
                "start": True,
            },
        )
        if r.status_code != 201:
            raise SystemExit(f"campaign refused: {r.status_code} {r.text[:500]}")
        campaign = r.json()
        deadline = time.monotonic() + timeout
        while campaign["state"] not in ("completed", "stopped", "canceled") and time.monotonic() < deadline:
            time.sleep(2)
            got = api.get(f"/orgs/sei/campaigns/{campaign['id']}/")
            if got.status_code == 200:
                campaign = got.json()
    return {"campaign": campaign["id"], "state": campaign["state"], "counts": campaign.get("counts", {}),
            "ids": [], "refused_count": 0, "refused": []}  # fmt: skip


def _phase(stack: Any, pg: Any, swarms: list[Any], driver: Any, results: str, env: dict[str, str],
           timeout: float) -> dict[str, Any]:  # fmt: skip
    W.pg_statements_reset(stack.pg_port, stack.db_name)
    cpu0, t0 = _cpu(stack, pg, swarms), time.monotonic()
    if callable(driver):
        driven = driver(timeout)
    else:
        driven = W.run_django(
            stack, driver, timeout=timeout + 120, env={**env, "BENCH_TIMEOUT": str(timeout)}
        )
    wall = time.monotonic() - t0
    cpu1 = _cpu(stack, pg, swarms)
    sql = W.pg_statements(stack.pg_port, stack.db_name)
    ids = stack.tmp / "ids.json"
    ids.write_text(__import__("json").dumps(driven["ids"]))
    out = W.run_django(
        stack, results, timeout=300, env={"BENCH_IDS": str(ids), "BENCH_CAMPAIGN": driven.get("campaign", "")}
    )
    out.update(driven=driven, wall=wall, sql=sql, cpu={k: cpu1[k] - cpu0[k] for k in cpu1})
    return out


def _campaign_available() -> bool:
    return (ROOT / "campaigns" / "services.py").exists()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.switch_campaign")
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (solo pool each)")
    parser.add_argument("--swarms", type=int, default=2, help="processes running the simulated gateways")
    parser.add_argument("--wait", type=float, default=20.0, help="gateways' long-poll wait (s)")
    parser.add_argument(
        "--window", type=int, default=0, help="switches in flight at most (0: meters / 5, >= 10)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="switch requests per second at most (0: no limit)"
    )
    parser.add_argument(
        "--driver",
        choices=["campaign", "direct"],
        default="campaign" if _campaign_available() else "direct",
        help="campaign: one campaign through the API; direct: switch_request calls (default: campaign if present)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="per phase (s)")
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--logs", type=Path, help="copy the processes' logs into this directory at the end")
    args = parser.parse_args()
    window = args.window or max(10, args.meters // 5)
    if args.driver == "campaign" and not _campaign_available():
        raise SystemExit("the campaigns app is not there: use --driver direct")

    from tests.e2e.conftest import free_port

    t_start = time.monotonic()
    pg_port = free_port()
    swarms: list[Any] = []
    ctx = mp.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="tessera-bench-switch-") as tmp_name,
        W.private_postgres(pg_port, args.logs / "postgres.log" if args.logs else None) as pg,
    ):
        tmp = Path(tmp_name)
        with W.bench_stack(tmp, pg_port=pg_port, workers=args.workers) as stack:
            t = time.monotonic()
            meters_file = tmp / "meters.json"
            public = W.make_meters(args.meters, meters_file)
            (tmp / "meters-public.json").write_text(__import__("json").dumps(public))
            t_cards = time.monotonic() - t
            t = time.monotonic()
            W.run_django(
                stack, W.SEED_METERS, timeout=3600, env={"BENCH_METERS": str(tmp / "meters-public.json")}
            )
            t_seed = time.monotonic() - t
            print(f"setup: {args.meters} cards with the old SD in {t_cards:.0f} s, enrolled in {t_seed:.0f} s",
                  flush=True)  # fmt: skip
            ready, stop, out = ctx.Queue(), ctx.Event(), ctx.Queue()
            for s in range(args.swarms):
                indices = list(range(s, args.meters, args.swarms))
                p = ctx.Process(target=W.swarm_process,
                                args=(stack.base_url, str(meters_file), indices, args.wait, ready, stop, out))  # fmt: skip
                p.start()
                swarms.append(p)
            for _ in swarms:
                ready.get(timeout=600)
            time.sleep(8)  # every gateway has polled once and is held
            idle_cpu0 = _cpu(stack, pg, swarms)
            time.sleep(10)
            idle_cpu = {k: (v - idle_cpu0[k]) / 10 for k, v in _cpu(stack, pg, swarms).items()}
            env = {"BENCH_WINDOW": str(window), "BENCH_RATE": str(args.rate)}
            print(f"phase 1: {args.meters} switches, window {window}", flush=True)
            driver: Any = DRIVE_SWITCHES
            if args.driver == "campaign":
                driver = lambda timeout: _drive_campaign(stack, window, args.rate, timeout)  # noqa: E731
            switch = _phase(stack, pg, swarms, driver, SWITCH_RESULTS, env, args.timeout)
            jobs_per_switch = switch["jobs"] / max(1, sum(switch["states"].values()))
            noop: dict[str, Any] | None = None
            if not args.skip_ceiling:
                per_device = max(1, round(jobs_per_switch))
                print(f"phase 2: {per_device} x {args.meters} read_status jobs, window {window}", flush=True)
                noop = _phase(stack, pg, swarms, DRIVE_NOOPS, NOOP_RESULTS,
                              {**env, "BENCH_JOBS_PER_DEVICE": str(per_device)}, args.timeout)  # fmt: skip
            stop.set()
            swarm_stats = [out.get(timeout=60) for _ in swarms]
            for p in swarms:
                p.join(timeout=30)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in tmp.glob("*.log"):
                shutil.copy(log, args.logs / log.name)
    _report(args, window, switch, noop, jobs_per_switch, swarm_stats, idle_cpu, time.monotonic() - t_start)
    return 0


def _report(args: Any, window: int, switch: dict[str, Any], noop: dict[str, Any] | None, jobs_per_switch: float,
            swarm_stats: list[dict[str, Any]], idle_cpu: dict[str, float], total: float) -> None:  # fmt: skip
    print()
    print(f"bench.switch_campaign: {args.meters} meters (software SEs, {args.swarms} swarm processes, long poll "
          f"wait {args.wait:g} s), daphne + {args.workers} Celery workers (solo) + beat, private PostgreSQL 15 and "
          f"Redis; driver {args.driver}, window {window}" + (f", rate {args.rate:g}/s" if args.rate else "")
          + f"; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, run {total / 60:.1f} min")  # fmt: skip
    print("  idle (all gateways held, nothing to do), CPU share: "
          + ", ".join(f"{k} {v * 100:.0f} %" for k, v in idle_cpu.items()))  # fmt: skip
    done = len(switch["durations"])
    span = (switch["last"] - switch["first"]) if switch["last"] else float("nan")
    rate = done / span * 60 if done else 0.0
    d = switch["durations"]
    if switch["driven"].get("campaign"):
        print(
            f"  campaign {switch['driven']['campaign']}: {switch['driven']['state']}, targets {switch['driven']['counts']}"
        )
    print(f"  switches (keys mode portal, no application): {switch['states']}"
          + (f" errors {switch['errors']}" if switch["errors"] else "")
          + (f" refused {switch['driven']['refused_count']}: {switch['driven']['refused']}"
             if switch["driven"]["refused_count"] else ""))  # fmt: skip
    if switch["driven"].get("retried"):
        print(f"    switch requests asked again after a database error: {switch['driven']['retried']} "
              f"(e.g. {switch['driven']['retry_sample']})")  # fmt: skip
    print(f"    {done} switched in {span:.0f} s -> {rate:.1f} devices/min")
    if d:
        print(f"    per device request -> completed: p50 {statistics.median(d):.1f} s  p95 {W.pct(d, 95):.1f} s  "
              f"max {max(d):.1f} s")  # fmt: skip
    print(f"    jobs per switch {jobs_per_switch:.2f} {switch['job_kinds']}, steps per switch "
          f"{switch['steps'] / max(done, 1):.2f}")  # fmt: skip
    sql = switch["sql"]
    print(f"    SQL statements per switched device: {sql['sql'] / max(done, 1):.0f} sent by the portal, plus "
          f"{sql['tx_control'] / max(done, 1):.0f} BEGIN/COMMIT/SAVEPOINT/RELEASE and "
          f"{sql['fk_checks'] / max(done, 1):.0f} foreign-key checks run by PostgreSQL "
          f"({sql['all'] / max(done, 1):.0f} in all)")  # fmt: skip
    print("      by statement and table, per switched device: "
          + ", ".join(f"{k} {v / max(done, 1):.0f}" for k, v in sql.get("top", [])))  # fmt: skip
    cpu = switch["cpu"]
    print(
        "    CPU s per switched device: " + ", ".join(f"{k} {v / max(done, 1):.2f}" for k, v in cpu.items())
    )
    if noop is not None:
        jobs = len(noop["durations"])
        nspan = (noop["last"] - noop["first"]) if noop["last"] else float("nan")
        jobs_min = jobs / nspan * 60 if jobs else 0.0
        ceiling = jobs_min / jobs_per_switch if jobs_per_switch else 0.0
        n = noop["durations"]
        print(f"  ceiling, read_status jobs chained per device: {noop['states']}")
        print(f"    {jobs} jobs in {nspan:.0f} s -> {jobs_min:.0f} jobs/min = {ceiling:.1f} devices/min at "
              f"{jobs_per_switch:.2f} jobs per switch")  # fmt: skip
        if n:
            dd = noop["device_durations"]
            print(f"    per job request -> succeeded: p50 {statistics.median(n):.2f} s  p95 {W.pct(n, 95):.2f} s; "
                  f"per device (its {round(jobs_per_switch)} jobs): p50 {statistics.median(dd):.1f} s  "
                  f"p95 {W.pct(dd, 95):.1f} s")  # fmt: skip
        nsql = noop["sql"]
        per_job = {k: nsql[k] / max(jobs, 1) for k in ("sql", "tx_control", "fk_checks", "all")}
        print(f"    SQL statements per job: {per_job['sql']:.0f} sent by the portal (x {jobs_per_switch:.0f} = "
              f"{per_job['sql'] * jobs_per_switch:.0f} per device), plus {per_job['tx_control']:.0f} transaction "
              f"control and {per_job['fk_checks']:.0f} foreign-key checks ({per_job['all']:.0f} in all)")  # fmt: skip
        print("      by statement and table, per job: "
              + ", ".join(f"{k} {v / max(jobs, 1):.1f}" for k, v in nsql.get("top", [])))  # fmt: skip
        print(
            "    CPU s per job: " + ", ".join(f"{k} {v / max(jobs, 1):.3f}" for k, v in noop["cpu"].items())
        )
        if ceiling:
            print(f"  ratio switched devices/min / ceiling devices/min: {rate / ceiling:.2f}")
    ex = sum(s["exchanges"] for s in swarm_stats)
    print(f"  swarm: {ex} exchanges, {sum(s['with_work'] for s in swarm_stats)} with work, "
          f"{sum(s['items'] for s in swarm_stats)} work items ({sum(s['failed_items'] for s in swarm_stats)} "
          f"stopped at an unexpected SW), {sum(s['errors'] for s in swarm_stats)} HTTP errors"
          + "".join(f"; e.g. {s['error_sample']}" for s in swarm_stats if s["error_sample"])[:400])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
