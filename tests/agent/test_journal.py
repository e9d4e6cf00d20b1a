"""The journal: crash recovery never re-sends a command of unknown outcome; results stay until acked."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import JournalError
from agent.journal import Journal
from agent.protocol import Command, WorkItem, WorkResult

ITEM = WorkItem(
    "it-1",
    "job-1",
    "apdu_script",
    0,
    (
        Command(bytes.fromhex("00A4040000"), ("9000",)),
        Command(bytes.fromhex("80CA9F7F00"), ("9000",)),
        Command(bytes.fromhex("80F21000024F00"), ("9000",)),
    ),
)


def _reopen(path: Path) -> Journal:
    return Journal(path)


def test_a_finished_item_is_pending_until_acked_and_then_seen_forever(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.received(ITEM)
    assert not j.seen(ITEM.item)  # nothing sent yet
    for i in range(3):
        j.sending(ITEM.item, i)
        j.response(ITEM.item, i, b"\x90\x00")
    j.finish(ITEM.item, "completed")
    assert j.pending_results() == [WorkResult("it-1", "completed", (b"\x90\x00",) * 3, "")]
    assert j.ack(["it-1", "unknown"]) == 1
    assert j.pending_results() == []
    assert j.seen("it-1")


def test_a_crash_after_sending_i_reports_interrupted_with_the_responses_before_it(tmp_path: Path) -> None:
    # given an agent that journalled command 1 as sent and then lost power
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    j.received(ITEM)
    j.sending(ITEM.item, 0)
    j.response(ITEM.item, 0, b"\x6f\x00\x90\x00")
    j.sending(ITEM.item, 1)
    j.close()
    # when it starts again
    j = _reopen(path)
    assert j.recover() == ["it-1"]
    # then the item is interrupted with response 0 only, and will never run again
    [result] = j.pending_results()
    assert result.status == "interrupted"
    assert result.responses == (b"\x6f\x00\x90\x00",)
    assert "command 1" in result.detail
    assert j.seen("it-1")
    with pytest.raises(JournalError, match="never executed twice"):
        j.received(ITEM)


def test_a_crash_after_the_last_response_settles_as_completed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    j.received(ITEM)
    for i in range(3):
        j.sending(ITEM.item, i)
        j.response(ITEM.item, i, b"\x90\x00")
    j.close()
    j = _reopen(path)
    j.recover()
    assert j.pending_results()[0].status == "completed"


def test_a_crash_after_an_unexpected_sw_settles_as_failed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    j.received(ITEM)
    j.sending(ITEM.item, 0)
    j.response(ITEM.item, 0, b"\x6a\x82")
    j.close()
    j = _reopen(path)
    j.recover()
    [result] = j.pending_results()
    assert (result.status, result.responses) == ("failed", (b"\x6a\x82",))


def test_a_crash_between_a_response_and_the_next_sending_is_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    j.received(ITEM)
    j.sending(ITEM.item, 0)
    j.response(ITEM.item, 0, b"\x90\x00")
    j.close()
    j = _reopen(path)
    j.recover()
    [result] = j.pending_results()
    assert (result.status, result.responses) == ("interrupted", (b"\x90\x00",))


def test_an_item_received_but_never_started_may_run_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    j.received(ITEM)
    j.close()
    j = _reopen(path)
    assert j.recover() == []
    assert not j.seen(ITEM.item)
    j.received(ITEM)  # the portal sends it again: it runs normally
    j.sending(ITEM.item, 0)


def test_a_response_must_follow_its_sending(journal: Journal) -> None:
    journal.received(ITEM)
    with pytest.raises(JournalError):
        journal.response(ITEM.item, 0, b"\x90\x00")
    journal.sending(ITEM.item, 0)
    with pytest.raises(JournalError):
        journal.response(ITEM.item, 1, b"\x90\x00")


def test_an_acked_result_can_be_requeued_when_the_portal_asks_again(journal: Journal) -> None:
    journal.received(ITEM)
    journal.finish(ITEM.item, "rejected", "no")
    journal.ack([ITEM.item])
    assert journal.requeue(ITEM.item)
    assert [r.item for r in journal.pending_results()] == ["it-1"]


def test_pruning_forgets_only_old_acknowledged_items(tmp_path: Path) -> None:
    now = [1000.0]
    j = Journal(tmp_path / "j.sqlite", clock=lambda: now[0])
    for name in ("a", "b"):
        item = WorkItem(name, "job", "apdu_script", 0, ())
        j.received(item)
        j.finish(name, "completed")
    j.ack(["a"])
    assert j.prune(older_than=2000.0) == 1
    assert j.entry("a") is None and j.entry("b") is not None


def test_the_journal_is_in_wal_mode_with_full_sync(journal: Journal) -> None:
    assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_an_unopenable_journal_is_a_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot open"):
        Journal(tmp_path / "missing-dir" / "j.sqlite")
