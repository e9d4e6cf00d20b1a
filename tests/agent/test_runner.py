"""The runner against an in-memory portal, driving a real software SE."""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

import pytest

from agent.backends.soft import SoftBackend
from agent.config import AgentConfig
from agent.errors import CardRemoved, NetworkError, ServerError
from agent.journal import Journal
from agent.runner import Runner
from tests.agent.fakes import GET_CPLC, SELECT_ISD, FakeServer, script

PUT_KEY = bytes.fromhex("80D8000117") + bytes.fromhex("01" * 23)


class Crash(BaseException):
    """A power cut: nothing after it runs."""


class RecordingBackend:
    kind = "soft"

    def __init__(
        self, inner: SoftBackend, crash_at: bytes | None = None, fail_at: bytes | None = None
    ) -> None:
        self.inner = inner
        self.sent: list[bytes] = []
        self.crash_at = crash_at
        self.fail_at = fail_at

    def transmit(self, apdu: bytes) -> bytes:
        if apdu == self.crash_at:
            raise Crash
        if apdu == self.fail_at:
            raise CardRemoved("card left the reader")
        self.sent.append(apdu)
        return self.inner.transmit(apdu)

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()

    def identifiers(self) -> dict[str, str]:
        return self.inner.identifiers()


def _runner(
    config: AgentConfig, server: FakeServer, backend: object, journal: Journal, **kw: object
) -> Runner:
    return Runner(config, server, backend, journal, **kw)  # type: ignore[arg-type]


def test_a_select_and_get_data_cplc_script_completes(config, soft_backend, journal) -> None:
    server = FakeServer(poll_after=45, queue=[script("i1", (SELECT_ISD, ("9000",)), (GET_CPLC, ("9000",)))])
    delay = _runner(config, server, soft_backend, journal).run_once()
    result = server.results["i1"]
    assert result.status == "completed"
    assert result.responses[1][:3] == bytes.fromhex("9F7F2A") and result.responses[1][-2:] == b"\x90\x00"
    assert delay == 45
    assert journal.pending_results() == []  # acked in the same cycle


def test_the_first_request_identifies_the_agent_and_its_secure_element(config, soft_backend, journal) -> None:
    server = FakeServer()
    _runner(config, server, soft_backend, journal).run_once()
    agent = server.requests[0].agent
    assert agent["serial"] == "GW-TEST-1" and agent["backend"] == "soft"
    assert agent["se_serial"] == "C0FFEE01" and len(agent["cplc"]) == 84
    assert server.requests[0].health["journal_pending"] == 0


def test_an_unexpected_sw_stops_the_script_and_fails_the_item(config, soft_backend, journal) -> None:
    backend = RecordingBackend(soft_backend)
    server = FakeServer(
        queue=[script("i1", (bytes.fromhex("00A4040005A000000999"), ("9000",)), (GET_CPLC, ("9000",)))]
    )
    _runner(config, server, backend, journal).run_once()
    result = server.results["i1"]
    assert result.status == "failed"
    assert len(result.responses) == 1 and result.responses[0] == b"\x6a\x82"
    assert "command 0" in result.detail and "6A82" in result.detail
    assert GET_CPLC not in backend.sent


def test_a_repeated_item_is_not_executed_again_and_its_result_is_resent(
    config, soft_backend, journal
) -> None:
    backend = RecordingBackend(soft_backend)
    item = script("i1", (SELECT_ISD, ("9000",)))
    server = FakeServer(queue=[item])
    runner = _runner(config, server, backend, journal)
    runner.run_once()
    # when the portal sends the same item again (it lost our result)
    server.results.clear()
    server.redeliver = [item]
    runner.run_once()
    assert backend.sent.count(SELECT_ISD) == 1
    assert server.results["i1"].status == "completed"


def test_results_are_resent_until_acknowledged(config, soft_backend, journal) -> None:
    server = FakeServer(ack=False, queue=[script("i1", (SELECT_ISD, ()))])
    runner = _runner(config, server, soft_backend, journal)
    runner.run_once()
    runner.run_once()
    assert [r.item for r in server.sent_results] == ["i1", "i1"]
    server.ack = True
    runner.run_once()
    runner.run_once()
    assert [r.item for r in server.sent_results] == ["i1", "i1", "i1"]


def test_while_work_flows_the_agent_posts_again_at_once(config, soft_backend, journal) -> None:
    server = FakeServer(per_exchange=1, queue=[script(f"i{n}", (SELECT_ISD, ("9000",))) for n in range(3)])
    _runner(config, server, soft_backend, journal).run_once()
    assert len(server.requests) == 4  # three with work, the last one empty
    assert sorted(server.results) == ["i0", "i1", "i2"]


def test_an_unknown_kind_is_rejected_without_touching_the_card(config, soft_backend, journal) -> None:
    backend = RecordingBackend(soft_backend)
    server = FakeServer(queue=[script("i1", (SELECT_ISD, ()), kind="firmware_update")])
    runner = _runner(config, server, backend, journal)
    runner.agent_info()
    backend.sent.clear()
    runner.run_once()
    assert server.results["i1"].status == "rejected"
    assert "firmware_update" in server.results["i1"].detail
    assert backend.sent == []


def test_an_item_past_its_deadline_is_rejected(config, soft_backend, journal) -> None:
    item = script("i1", (SELECT_ISD, ()))
    late = type(item)(item.item, item.job, item.kind, 0, item.commands, "2000-01-01T00:00:00Z")
    server = FakeServer(queue=[late])
    _runner(config, server, soft_backend, journal).run_once()
    assert server.results["i1"].status == "rejected"


def test_a_lost_card_interrupts_the_item_and_leaves_the_rest_for_later(config, soft_backend, journal) -> None:
    backend = RecordingBackend(soft_backend, fail_at=GET_CPLC)
    server = FakeServer(
        queue=[script("i1", (SELECT_ISD, ("9000",)), (GET_CPLC, ("9000",))), script("i2", (SELECT_ISD, ()))]
    )
    runner = _runner(config, server, backend, journal)
    runner.agent_info()
    delay = runner.run_once()
    assert server.results["i1"].status == "interrupted"
    assert len(server.results["i1"].responses) == 1
    assert "i2" not in server.results and not journal.seen("i2")
    assert delay == config.poll.min_s


def test_a_crash_after_sending_a_command_reports_interrupted_and_never_resends_it(
    tmp_path: Path, config, soft_backend
) -> None:
    # given a power cut while command 1 (PUT KEY) is on its way to the card
    item = script("i1", (SELECT_ISD, ("9000",)), (PUT_KEY, ("9000",)), (GET_CPLC, ("9000",)))
    backend = RecordingBackend(soft_backend, crash_at=PUT_KEY)
    server = FakeServer(queue=[item])
    journal = Journal(tmp_path / "crash.sqlite")
    runner = _runner(config, server, backend, journal)
    runner.agent_info()
    with pytest.raises(Crash):
        runner.run_once()
    journal.close()
    # when the agent starts again and the portal, having no result, sends the item again
    backend = RecordingBackend(soft_backend)
    journal = Journal(tmp_path / "crash.sqlite")
    server.redeliver = [item]
    stop = threading.Event()
    runner = _runner(config, server, backend, journal, wait=lambda ev, d: stop.set())
    runner.agent_info()
    backend.sent.clear()
    runner.run_forever(stop)
    # then it reports interrupted with the one response it had, and sent nothing of the item again
    result = server.results["i1"]
    assert result.status == "interrupted" and len(result.responses) == 1
    assert backend.sent == []


def test_transport_errors_back_off_exponentially_with_full_jitter_and_a_cap(
    config, soft_backend, journal
) -> None:
    server = FakeServer(poll_after=5, failures=[NetworkError("down")] * 8)
    delays: list[float] = []
    stop = threading.Event()

    def wait(ev: threading.Event, delay: float) -> None:
        delays.append(delay)
        if len(delays) == 9:
            stop.set()

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b  # the top of the jitter range, to see the envelope

    _runner(config, server, soft_backend, journal, wait=wait, rng=Top()).run_forever(stop)
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60, 5]


def test_the_jitter_stays_within_the_envelope(config, soft_backend, journal) -> None:
    runner = _runner(config, FakeServer(), soft_backend, journal, rng=random.Random(7))
    samples = [runner.backoff(3) for _ in range(200)]
    assert all(0 <= s <= 8 for s in samples) and max(samples) > 4 and min(samples) < 4


def test_retry_after_from_the_portal_is_honoured(config, soft_backend, journal) -> None:
    error = ServerError(503, "busy")
    error.retry_after = 45
    server = FakeServer(failures=[error])
    delays: list[float] = []
    stop = threading.Event()
    runner = _runner(config, server, soft_backend, journal, wait=lambda ev, d: (delays.append(d), stop.set()))
    runner.run_forever(stop)
    assert delays[0] >= 45


def test_the_server_poll_delay_is_clamped_to_the_configured_bounds(config, soft_backend, journal) -> None:
    assert _runner(config, FakeServer(poll_after=0), soft_backend, journal).run_once() == 1.0
    assert _runner(config, FakeServer(poll_after=86400), soft_backend, journal).run_once() == 600.0


def test_a_long_polling_agent_asks_to_wait_and_listens_again_at_once(config, soft_backend, journal) -> None:
    from dataclasses import replace

    long_poll = replace(config, poll=replace(config.poll, wait_s=20.0))
    server = FakeServer(poll_after=0)
    # the portal held the exchange to the end and answered poll_after 0: ask again (almost) at once
    assert _runner(long_poll, server, soft_backend, journal).run_once() == 0.05
    assert server.requests[-1].wait == 20.0
    # a portal that did not hold answers its usual delay, which is honoured (clamped to max_s only)
    assert _runner(long_poll, FakeServer(poll_after=7), soft_backend, journal).run_once() == 7
    # a plain-polling agent never asks to wait
    plain = FakeServer(poll_after=0)
    _runner(config, plain, soft_backend, journal).run_once()
    assert plain.requests[-1].wait == 0


def test_log_lines_never_carry_apdu_data(config, soft_backend, journal, caplog) -> None:
    server = FakeServer(queue=[script("i1", (SELECT_ISD, ("9000",)), (PUT_KEY, ()))])
    with caplog.at_level(logging.DEBUG, logger="agent"):
        _runner(config, server, soft_backend, journal).run_once()
    text = caplog.text
    assert "item=i1" in text and "ins=D8" in text
    assert PUT_KEY[5:].hex() not in text.lower() and "a000000151" not in text.lower()
