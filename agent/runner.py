"""The agent's loop: post what it has, run the work it gets, journal every step, sleep, repeat.

One cycle (:meth:`Runner.run_once`), TEEP-over-HTTP's shape (docs/agent-protocol.md):

1. POST pending results (oldest first, as many as fit in one body) with ``agent`` and ``health``.
2. Mark the results the answer acknowledges.
3. Run each work item not seen before, in order, command by command:
   ``received`` → (``sending i`` → transmit → ``response i``)* → ``finish``. The first response
   whose SW is not in the command's ``expect`` ends the item ``failed``; a backend failure ends
   it ``interrupted`` and stops the cycle's work (the card is gone; the portal resends the rest).
   An item seen before is never run again: its recorded result is sent once more. An unknown
   ``kind`` or a passed ``deadline`` is ``rejected`` without touching the card.
4. While work flows (or results are left over), post again at once; an answer with no work ends
   the cycle, and its ``poll_after`` — clamped to the configured bounds — is the delay returned.
   With ``[poll] wait_s`` set (long poll), every exchange asks the portal to hold it up to that
   long until work appears; the portal answers a long poll it held to the end with a short
   ``poll_after`` that is honoured below ``min_s``, so an online agent is always listening.

:meth:`Runner.run_forever` repeats cycles until its stop event is set (SIGTERM/SIGINT through
:func:`install_signal_handlers`); a :class:`~agent.errors.TransportError` is answered with
exponential backoff with full jitter (``uniform(0, min(cap, base·2^(n-1)))``), at least the
server's ``Retry-After``. A :class:`~agent.errors.JournalError` stops the agent: without its
journal it could repeat a command.

Log lines are ``key=value`` with item and job ids, indexes, INS, lengths and SWs — never APDU
data (PUT KEY and STORE DATA carry keys, even wrapped).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from agent import __version__
from agent.backends import CardBackend
from agent.config import AgentConfig
from agent.errors import BackendError, ConfigError, TransportError
from agent.journal import Journal
from agent.protocol import (
    KIND_APDU_SCRIPT,
    KIND_TOKEN_OPS,
    MAX_BODY_BYTES,
    MAX_DETAIL,
    MAX_ITEMS,
    MAX_RAPDU,
    ExchangeRequest,
    WorkItem,
    WorkResult,
    encode,
    sw_matches,
)
from agent.transport import Transport

__all__ = ["Runner", "install_signal_handlers"]

log = logging.getLogger("agent.runner")

MAX_ROUNDS = 100  # exchanges in one cycle before the agent insists on a pause
_ENVELOPE = 4096  # room for protocol/agent/health around the results


def _wait(stop: threading.Event, delay: float) -> None:
    stop.wait(delay)


class Runner:
    def __init__(
        self,
        config: AgentConfig,
        transport: Transport,
        backend: CardBackend,
        journal: Journal,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        wait: Callable[[threading.Event, float], None] = _wait,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self.backend = backend
        self.journal = journal
        self._clock = clock
        self._wall = wall
        self._wait = wait
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._started = clock()
        self._agent: dict[str, Any] | None = None
        self.failures = 0
        self._root: Any = None  # agent.ocepin.PinnedRoot, once read
        self._warned_unpinned = False

    # -- the request --

    def agent_info(self) -> dict[str, Any]:
        """``agent`` member: version, backend, serial and the SE identifiers (read once, before any work)."""
        if self._agent is None:
            info: dict[str, Any] = {
                "version": __version__,
                "backend": self.backend.kind,
                "serial": self.config.serial,
            }
            try:
                info.update(self.backend.identifiers())
            except BackendError as e:
                log.warning("event=identifiers_unavailable error=%s", type(e).__name__)
                return info  # try again next cycle
            self._agent = info
        return dict(self._agent)

    def _health(self, pending: int) -> dict[str, Any]:
        return {"uptime_s": int(self._clock() - self._started), "journal_pending": pending}

    def _batch(self) -> tuple[list[WorkResult], int]:
        """Pending results that fit one body (oldest first), and how many are pending in all."""
        pending = self.journal.pending_count()
        budget = MAX_BODY_BYTES - _ENVELOPE
        batch: list[WorkResult] = []
        for result in self.journal.pending_results(limit=MAX_ITEMS):
            size = len(encode(result.to_json())) + 1
            if size > budget and not batch:
                result, size = _trimmed(result, budget)
            if size > budget:
                break
            batch.append(result)
            budget -= size
        return batch, pending

    # -- one cycle --

    def run_once(self, stop: threading.Event | None = None) -> float:
        """One exchange cycle (module docstring); returns the delay before the next one."""
        card_lost = False
        for _round in range(MAX_ROUNDS):
            results, pending = self._batch()
            request = ExchangeRequest(
                agent=self.agent_info(),
                results=tuple(results),
                health=self._health(pending),
                wait=self.config.poll.wait_s,
            )
            response = self.transport.exchange(request)
            acked = self.journal.ack(response.acks)
            log.info(
                "event=exchange sent_results=%d acked=%d work=%d poll_after=%g",
                len(results),
                acked,
                len(response.work),
                response.poll_after,
            )
            if card_lost:
                return self.config.poll.min_s  # results delivered; the card needs a pause
            # Journal the whole answer first: a crash during item 1 must not lose items 2..n,
            # which the portal has marked dispatched and will not send again.
            for item in response.work:
                if not self.journal.seen(item.item):
                    self.journal.received(item)
            for item in response.work:
                if stop is not None and stop.is_set():
                    break
                if not self.handle(item):
                    card_lost = True
                    break
            if stop is not None and stop.is_set():
                return 0.0
            if not response.work and not card_lost and len(results) >= pending:
                if request.wait:
                    return self.config.poll.after_long_poll(response.poll_after)
                return self.config.poll.clamp(response.poll_after)
        log.warning("event=busy rounds=%d", MAX_ROUNDS)
        return self.config.poll.min_s

    def handle(self, item: WorkItem) -> bool:
        """Run or settle one work item; False when the card could not be reached."""
        ctx = f"item={item.item} job={item.job}"
        if self.journal.seen(item.item):
            if self.journal.requeue(item.item):
                log.info("event=item_repeated %s action=resend_result", ctx)
            else:
                log.warning("event=item_repeated %s action=ignored", ctx)
            return True
        if item.kind == KIND_TOKEN_OPS:
            return self._handle_token_ops(item)
        if item.kind != KIND_APDU_SCRIPT:
            return self._reject(item, f"unknown work kind {item.kind!r}")
        if not getattr(self.backend, "takes_apdus", True):
            return self._reject(item, f"the {self.backend.kind} backend takes no APDU scripts")
        deadline = item.deadline_timestamp()
        if deadline is not None and self._wall() > deadline:
            return self._reject(item, f"deadline {item.deadline} has passed")
        self.journal.received(item)
        log.info(
            "event=item_start %s kind=%s channel=%d commands=%d",
            ctx,
            item.kind,
            item.channel,
            len(item.commands),
        )
        for index, command in enumerate(item.commands):
            apdu = command.apdu
            self.journal.sending(item.item, index)
            try:
                rapdu = self.backend.transmit(apdu)
            except BackendError as e:
                self._finish(item, "interrupted", f"command {index}: {e}")
                return False
            if not 2 <= len(rapdu) <= MAX_RAPDU:
                self._finish(item, "interrupted", f"command {index}: card answered {len(rapdu)} bytes")
                return True
            self.journal.response(item.item, index, rapdu)
            sw = int.from_bytes(rapdu[-2:], "big")
            log.debug(
                "event=command %s index=%d ins=%02X c_len=%d r_len=%d sw=%04X",
                ctx,
                index,
                apdu[1],
                len(apdu),
                len(rapdu) - 2,
                sw,
            )
            if not sw_matches(sw, command.expect):
                expected = ",".join(command.expect)
                self._finish(
                    item, "failed", f"command {index} (INS {apdu[1]:02X}): SW {sw:04X} not in [{expected}]"
                )
                return True
        self._finish(item, "completed", "")
        return True

    def _handle_token_ops(self, item: WorkItem) -> bool:
        """A TEE's script (agent/tokenops.py): each operation journalled before it runs and its
        answer after, exactly as commands are; the first unexpected outcome ends the item."""
        from agent import tokenops
        from agent.pkcs11.token import TokenError

        token = getattr(getattr(self.backend, "backend", self.backend), "token", None)
        if token is None:
            return self._reject(item, f"the {self.backend.kind} backend has no token for token operations")
        deadline = item.deadline_timestamp()
        if deadline is not None and self._wall() > deadline:
            return self._reject(item, f"deadline {item.deadline} has passed")
        try:
            ops = [tokenops.decode_op(c.apdu)["op"] for c in item.commands]
        except tokenops.TokenOpError as e:
            return self._reject(item, f"malformed token operation: {e}")
        self.journal.received(item)
        ctx = f"item={item.item} job={item.job}"
        log.info("event=item_start %s kind=%s operations=%d", ctx, item.kind, len(ops))
        lock = getattr(self.backend, "exclusive", None)
        for index, command in enumerate(item.commands):
            self.journal.sending(item.item, index)
            started = time.perf_counter()
            try:
                if lock is not None:
                    with lock():
                        result = tokenops.execute(token, command.apdu, oce_root=self._pinned_root)
                else:
                    result = tokenops.execute(token, command.apdu, oce_root=self._pinned_root)
            except (TokenError, tokenops.TokenOpError) as e:
                self._finish(item, "interrupted", f"operation {index} ({ops[index]}): {e}")
                return not isinstance(e, TokenError)
            except ConfigError as e:  # the pinned CA root is unusable: receive nothing unchecked
                self._finish(item, "failed", f"operation {index} ({ops[index]}): {e}")
                return True
            self.journal.response(item.item, index, result.encode())
            log.info(
                "event=token_op %s index=%d op=%s outcome=%s ms=%.1f",
                ctx,
                index,
                ops[index],
                result.outcome,
                (time.perf_counter() - started) * 1000,
            )
            if not result.ok:
                self._finish(item, "failed", f"operation {index} ({ops[index]}): outcome {result.outcome}")
                return True
        self._finish(item, "completed", "")
        return True

    def _pinned_root(self) -> Any:
        """The CA root pinned at enrolment (``[token] oce_root``), read and parsed once, when the
        first confidential envelope arrives; None when none is pinned (the portal's check only)."""
        token = self.config.token
        if token is None or token.oce_root is None:
            if not self._warned_unpinned:
                self._warned_unpinned = True
                log.warning(
                    "event=oce_unpinned a confidential envelope arrives and no CA root is pinned: its "
                    "OCE signature is checked by the portal only (pin one: agent pin-ca-root)"
                )
            return None
        if self._root is None:
            from agent.ocepin import load_root

            self._root = load_root(token.oce_root)
        return self._root

    def _reject(self, item: WorkItem, detail: str) -> bool:
        self.journal.received(item)
        self._finish(item, "rejected", detail)
        return True

    def _finish(self, item: WorkItem, status: str, detail: str) -> None:
        self.journal.finish(item.item, status, detail[:MAX_DETAIL])
        log.info("event=item_done item=%s job=%s status=%s", item.item, item.job, status)

    # -- forever --

    def backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(cap, base · 2^(failures-1))]."""
        poll = self.config.poll
        ceiling = min(poll.backoff_cap_s, poll.backoff_base_s * 2.0 ** min(max(failures - 1, 0), 62))
        return self._rng.uniform(0.0, ceiling)

    def resume(self) -> None:
        """After a restart: settle items a crash interrupted (reported ``interrupted``, never
        re-sent), then run the items that were journalled but never started."""
        for item_id in self.journal.recover():
            log.warning("event=item_recovered item=%s", item_id)
        for item in self.journal.unstarted():
            log.info("event=item_resumed item=%s job=%s", item.item, item.job)
            if not self.handle(item):
                break

    def run_forever(self, stop: threading.Event) -> None:
        """Cycle until ``stop`` is set; transport failures back off, journal failures propagate."""
        self.resume()
        while not stop.is_set():
            try:
                delay = self.run_once(stop)
                self.failures = 0
            except TransportError as e:
                self.failures += 1
                delay = self.backoff(self.failures)
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, self.config.poll.backoff_cap_s))
                log.warning(
                    "event=exchange_failed error=%s code=%s attempt=%d retry_in=%.1f message=%r",
                    type(e).__name__,
                    getattr(e, "code", getattr(e, "status", "")),
                    self.failures,
                    delay,
                    str(e)[:200],
                )
            if stop.is_set():
                break
            self._wait(stop, delay)
        log.info("event=stopped")


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the current item finishes, then the loop ends."""

    def _handler(signum: int, frame: FrameType | None) -> None:
        log.info("event=signal signal=%s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def _trimmed(result: WorkResult, budget: int) -> tuple[WorkResult, int]:
    """A result too large for any body, with responses dropped from the end until it fits."""
    responses = list(result.responses)
    total = len(responses)
    while True:
        note = f" [responses truncated: {len(responses)} of {total} fit the body limit]"
        trimmed = WorkResult(
            result.item, result.status, tuple(responses), (result.detail + note)[-MAX_DETAIL:]
        )
        size = len(encode(trimmed.to_json())) + 1
        if size <= budget or not responses:
            return trimmed, size
        responses.pop()
