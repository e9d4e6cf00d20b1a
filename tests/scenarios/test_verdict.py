"""The verdict of a story: exit 0 only when every check passed, 1 naming the failed expectation,
2 naming the step that could not be done; the narrative says each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scenarios import run as story_run
from scenarios.runtime import Runtime, StoryFailed


def _story(*, fail_check: bool = False, fail_step: bool = False) -> Any:
    def story(rt: Runtime) -> None:
        with rt.step("the grid operator does one thing") as o:
            o["text"] = "done it"
        if fail_step:
            with rt.step("the supplier does another"):
                raise StoryFailed("the card answered 6985")
        rt.check("Ana", "her meter keeps her own application", True)
        rt.check("SunPower", "its domain is gone", not fail_check, "still on the card")

    return story


@pytest.mark.parametrize(
    ("kw", "status", "named"),
    [
        ({}, 0, "PASSED — 2 checks"),
        ({"fail_check": True}, 1, "FAILED — SunPower: its domain is gone"),
        ({"fail_step": True}, 2, "FAILED — step failed: the card answered 6985"),
    ],
)
def test_the_verdict_follows_the_checks_and_steps(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kw: dict[str, bool], status: int, named: str
) -> None:
    monkeypatch.setitem(story_run.STORIES, "probe", _story(**kw))
    lines: list[str] = []
    verdict = story_run.run_story("probe", server="http://127.0.0.1:9", emit=lines.append, workdir=tmp_path)
    assert verdict.status == status
    assert lines[-1].startswith("VERDICT probe: ") and named in lines[-1]
    assert any("1. the grid operator does one thing — done it" in ln for ln in lines)
    if kw.get("fail_check"):
        assert any("check [FAIL] SunPower: its domain is gone (still on the card)" in ln for ln in lines)
    if kw.get("fail_step"):
        assert any("2. the supplier does another — FAILED: the card answered 6985" in ln for ln in lines)


def test_an_unknown_story_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown story"):
        story_run.run_story("gardening", server="http://127.0.0.1:9", emit=print, workdir=tmp_path)
