"""A crash between journalling an answer and running its items loses nothing and repeats nothing."""

from __future__ import annotations

from agent.journal import Journal
from agent.protocol import Command, WorkItem


def _item(n: int) -> WorkItem:
    return WorkItem(
        item=f"job.{n}.1.script",
        job="job",
        kind="apdu_script",
        channel=0,
        commands=(Command(apdu=bytes.fromhex("80CA9F7F00"), expect=("9000",)),),
    )


def test_items_journalled_but_never_started_are_listed_for_resumption_in_order(tmp_path):
    # given an answer of three items, journalled on arrival, the first one then started
    journal = Journal(tmp_path / "j.sqlite")
    items = [_item(n) for n in range(3)]
    for item in items:
        journal.received(item)
    journal.sending(items[0].item, 0)
    # when the agent restarts
    reopened = Journal(tmp_path / "j.sqlite")
    reopened.recover()
    # then the started item is settled (never re-run) and the other two are resumable, in order
    assert [i.item for i in reopened.unstarted()] == [items[1].item, items[2].item]
    assert reopened.seen(items[0].item)
    assert reopened.result(items[0].item).status == "interrupted"
