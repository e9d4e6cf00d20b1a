"""Running one story: its runtime, its verdict, its exit status."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from scenarios.runtime import Runtime, StoryFailed
from scenarios.stories import STORIES

EXIT_PASSED, EXIT_CHECK_FAILED, EXIT_STEP_FAILED = 0, 1, 2


@dataclass
class Verdict:
    story: str
    status: int
    seconds: float
    checks: int
    failed: list[str]

    @property
    def line(self) -> str:
        if self.status == EXIT_PASSED:
            return f"VERDICT {self.story}: PASSED — {self.checks} checks in {self.seconds:.1f}s"
        what = "; ".join(self.failed) or "a step failed"
        return f"VERDICT {self.story}: FAILED — {what} ({self.seconds:.1f}s)"


def run_story(name: str, *, server: str, emit: Callable[[str], None], workdir: Path | None = None) -> Verdict:
    """Run story ``name`` against the portal at ``server``; every narrative line goes to ``emit``.
    Agents are always stopped, whatever happens."""
    if name not in STORIES:
        raise ValueError(f"unknown story {name!r}; one of {', '.join(STORIES)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rt = Runtime(
        story=name,
        server=server.rstrip("/"),
        emit=emit,
        workdir=workdir or Path(settings.VAR_DIR) / "scenarios" / f"{name}-{stamp}",
    )
    rt.workdir.mkdir(parents=True, exist_ok=True)
    status = EXIT_PASSED
    failed: list[str] = []
    try:
        STORIES[name](rt)
    except StoryFailed as exc:
        status = EXIT_STEP_FAILED
        failed.append(f"step failed: {exc}")
    except Exception as exc:  # noqa: BLE001 - the verdict says what broke; the trace goes to the log
        status = EXIT_STEP_FAILED
        failed.append(f"{type(exc).__name__}: {str(exc)[:300]}")
        (rt.workdir / "error.txt").write_text(traceback.format_exc())
    finally:
        rt.stop_all()
    bad = rt.failed_checks
    if bad and status == EXIT_PASSED:
        status = EXIT_CHECK_FAILED
    failed += [f"{c.stakeholder}: {c.expectation}" for c in bad]
    verdict = Verdict(name, status, time.monotonic() - rt.started, len(rt.checks), failed)
    emit(verdict.line)
    return verdict
