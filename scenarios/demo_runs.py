"""The demo's story buttons (``make run``): a story runs as ``manage.py scenario`` in a subprocess
of the server, its narrative written to a file under ``$TESSERA_VAR_DIR/scenarios/runs/``, which
the demo page polls. One story at a time (they share the machine's two cores with the portal)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from portal.errors import ConflictError, NotFoundError
from scenarios.stories import STORIES

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_LINES = 400
_lock = threading.Lock()
_running: dict[str, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class RunView:
    run_id: str
    story: str
    lines: list[str]
    done: bool
    status: int | None
    verdict: str

    @property
    def passed(self) -> bool:
        return self.done and self.status == 0


def runs_dir() -> Path:
    path = Path(settings.VAR_DIR) / "scenarios" / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_start(*, story: str, server: str) -> str:
    """Start ``story`` against ``server``; returns the run's id. 404 for an unknown story, 409
    while another story runs."""
    if story not in STORIES:
        raise NotFoundError("No such story.")
    with _lock:
        busy = [rid for rid, p in _running.items() if p.poll() is None]
        if busy:
            raise ConflictError(
                "A story is already running: watch it, or wait for its verdict.", code="story_running"
            )
        run_id = uuid.uuid4().hex
        base = runs_dir() / run_id
        (base.with_suffix(".story")).write_text(story)
        out = base.with_suffix(".log").open("wb")
        err = base.with_suffix(".err").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "scenario", story, "--server", server],
            cwd=settings.BASE_DIR,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        err.close()
        _running[run_id] = proc

    def wait() -> None:
        code = proc.wait()
        base.with_suffix(".rc").write_text(str(code))
        with _lock:
            _running.pop(run_id, None)

    threading.Thread(target=wait, name=f"story-{run_id[:8]}", daemon=True).start()
    return run_id


def run_read(run_id: str) -> RunView:
    """The narrative so far of run ``run_id`` (404 for anything that is not a run of this server)."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise NotFoundError("No such run.")
    base = runs_dir() / run_id
    story_file = base.with_suffix(".story")
    if not story_file.exists():
        raise NotFoundError("No such run.")
    log = base.with_suffix(".log")
    lines = log.read_text(errors="replace").splitlines()[-MAX_LINES:] if log.exists() else []
    rc_file = base.with_suffix(".rc")
    status: int | None = None
    if rc_file.exists():
        status = int(rc_file.read_text().strip() or "1")
    with _lock:
        alive = run_id in _running
    done = status is not None or not alive
    verdict = next((ln for ln in reversed(lines) if ln.startswith("VERDICT ")), "")
    if done and not verdict:
        tail = base.with_suffix(".err")
        reason = tail.read_text(errors="replace").strip().splitlines()[-1:] if tail.exists() else []
        verdict = "VERDICT: the story did not finish" + (f" — {reason[0][:200]}" if reason else "")
    return RunView(run_id, story_file.read_text().strip(), lines, done, status, verdict)
