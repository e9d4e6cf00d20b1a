"""The agent's SQLite journal (docs/agent-protocol.md §Journal): a power cut loses nothing, repeats nothing.

Every method is one committed transaction (WAL, ``synchronous=FULL``), so by the time
:meth:`Journal.sending` returns, "command *i* may have reached the card" is on disk, and by the time
:meth:`Journal.response` returns, so is its answer. The runner calls them in this order:

1. ``received(item)`` — the item is known; nothing has touched the card.
2. ``sending(item, i)`` before command *i*; ``response(item, i, rapdu)`` after it.
3. ``finish(item, status, detail)`` — the result, pending until the portal acknowledges it.
4. ``ack(items)`` once the portal's answer lists them.

States of an item: ``received`` → ``running`` (a command was sent) → ``finished``; ``acked`` marks a
finished item whose result the portal recorded. An item that left ``received`` is never executed
again (:meth:`seen`); the portal sending it again gets its recorded result back (:meth:`requeue`).

:meth:`recover`, at start-up, settles items a crash left ``running``: if every sent command has
its response, the outcome is known (``failed`` at an unexpected SW, ``completed`` after the last
command); otherwise the item is ``interrupted`` with the responses it has — the command after them
may or may not have reached the card, so it is never re-sent. Items still ``received`` (no command
sent) are left alone: the portal sends them again and they run normally.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.errors import JournalError
from agent.protocol import WorkItem, WorkResult, sw_matches

__all__ = ["Journal", "JournalEntry"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('received', 'running', 'finished')),
    sending INTEGER,
    status TEXT,
    detail TEXT NOT NULL DEFAULT '',
    acked INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS responses (
    item TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    rapdu BLOB NOT NULL,
    PRIMARY KEY (item, idx)
);
CREATE INDEX IF NOT EXISTS items_pending ON items (state, acked);
"""


class JournalEntry:
    """A read-only view of one journalled item (for tests and ``recover``)."""

    __slots__ = ("item", "state", "sending", "status", "detail", "acked", "responses")

    def __init__(
        self,
        item: WorkItem,
        state: str,
        sending: int | None,
        status: str | None,
        detail: str,
        acked: bool,
        responses: tuple[bytes, ...],
    ) -> None:
        self.item = item
        self.state = state
        self.sending = sending
        self.status = status
        self.detail = detail
        self.acked = acked
        self.responses = responses


class Journal:
    """Crash-safe record of work items; see the module docstring for the protocol."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            with self._tx():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif version != SCHEMA_VERSION:
                    raise JournalError(
                        f"{self.path}: journal schema {version}, this agent reads {SCHEMA_VERSION}"
                    )
        except sqlite3.Error as e:
            raise JournalError(f"{self.path}: cannot open the journal: {e}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            raise JournalError(f"{self.path}: journal write failed: {e}") from None

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise JournalError(f"{self.path}: journal read failed: {e}") from None

    # -- writes, one transaction each --

    def received(self, item: WorkItem) -> None:
        """Record ``item`` before anything of it reaches the card (idempotent while unstarted)."""
        body = json.dumps(item.to_json(), separators=(",", ":"))
        with self._tx() as db:
            row = db.execute("SELECT state FROM items WHERE id = ?", (item.item,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO items (id, job, body, state, received_at) VALUES (?, ?, ?, 'received', ?)",
                    (item.item, item.job, body, self._clock()),
                )
            elif row[0] == "received":
                db.execute("UPDATE items SET body = ?, job = ? WHERE id = ?", (body, item.job, item.item))
            else:
                raise JournalError(f"item {item.item} was already executed; it is never executed twice")

    def sending(self, item_id: str, index: int) -> None:
        """Command ``index`` is about to be sent (after this, its outcome is unknown until ``response``)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE items SET state = 'running', sending = ? WHERE id = ? AND state IN ('received', 'running')",
                (index, item_id),
            )
            if cur.rowcount != 1:
                raise JournalError(f"item {item_id}: sending {index} for an item that is not running")

    def response(self, item_id: str, index: int, rapdu: bytes) -> None:
        with self._tx() as db:
            row = db.execute("SELECT state, sending FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None or row[0] != "running" or row[1] != index:
                raise JournalError(f"item {item_id}: response {index} does not follow sending {index}")
            db.execute(
                "INSERT INTO responses (item, idx, rapdu) VALUES (?, ?, ?)", (item_id, index, bytes(rapdu))
            )

    def finish(self, item_id: str, status: str, detail: str = "") -> None:
        """The item's result is final; it stays pending until acknowledged."""
        WorkResult(item_id, status, (), detail)  # validates status and detail
        with self._tx() as db:
            cur = db.execute(
                "UPDATE items SET state = 'finished', status = ?, detail = ?, finished_at = ?, acked = 0"
                " WHERE id = ? AND state != 'finished'",
                (status, detail, self._clock(), item_id),
            )
            if cur.rowcount != 1:
                raise JournalError(f"item {item_id}: finish for an unknown or finished item")

    def ack(self, item_ids: Iterable[str]) -> int:
        """The portal recorded these results; they are no longer sent. Returns how many were pending."""
        ids = list(item_ids)
        if not ids:
            return 0
        with self._tx() as db:
            return sum(
                db.execute(
                    "UPDATE items SET acked = 1 WHERE id = ? AND state = 'finished' AND acked = 0", (i,)
                ).rowcount
                for i in ids
            )

    def requeue(self, item_id: str) -> bool:
        """Send a finished item's recorded result again (the portal asked for the item again)."""
        with self._tx() as db:
            cur = db.execute("UPDATE items SET acked = 0 WHERE id = ? AND state = 'finished'", (item_id,))
            return cur.rowcount == 1

    def prune(self, *, older_than: float) -> int:
        """Forget acknowledged items finished before ``older_than`` (Unix time)."""
        with self._tx() as db:
            return db.execute(
                "DELETE FROM items WHERE state = 'finished' AND acked = 1 AND finished_at < ?", (older_than,)
            ).rowcount

    def recover(self) -> list[str]:
        """Settle items a crash left running (module docstring); return their ids."""
        settled = []
        for (item_id,) in self._read("SELECT id FROM items WHERE state = 'running' ORDER BY received_at"):
            entry = self.entry(str(item_id))
            assert entry is not None
            status, detail = _settle(entry)
            self.finish(entry.item.item, status, detail)
            settled.append(entry.item.item)
        return settled

    # -- reads --

    def unstarted(self) -> list[WorkItem]:
        """Items journalled on arrival whose first command was never sent (safe to run now)."""
        rows = self._read("SELECT body FROM items WHERE state = 'received' ORDER BY received_at, rowid")
        return [WorkItem.from_json(json.loads(str(body))) for (body,) in rows]

    def seen(self, item_id: str) -> bool:
        """Whether any command of this item may have reached the card (then it never runs again)."""
        rows = self._read("SELECT state FROM items WHERE id = ?", (item_id,))
        return bool(rows) and rows[0][0] != "received"

    def entry(self, item_id: str) -> JournalEntry | None:
        rows = self._read(
            "SELECT body, state, sending, status, detail, acked FROM items WHERE id = ?", (item_id,)
        )
        if not rows:
            return None
        body, state, sending, status, detail, acked = rows[0]
        return JournalEntry(
            WorkItem.from_json(json.loads(str(body))),
            str(state),
            None if sending is None else int(sending),
            None if status is None else str(status),
            str(detail),
            bool(acked),
            self._responses(item_id),
        )

    def _responses(self, item_id: str) -> tuple[bytes, ...]:
        rows = self._read("SELECT rapdu FROM responses WHERE item = ? ORDER BY idx", (item_id,))
        return tuple(bytes(r[0]) for r in rows)

    def result(self, item_id: str) -> WorkResult | None:
        rows = self._read("SELECT status, detail FROM items WHERE id = ? AND state = 'finished'", (item_id,))
        if not rows:
            return None
        status, detail = rows[0]
        return WorkResult(item_id, str(status), self._responses(item_id), str(detail))

    def pending_results(self, limit: int | None = None) -> list[WorkResult]:
        """Finished, unacknowledged results, oldest first."""
        rows = self._read(
            "SELECT id FROM items WHERE state = 'finished' AND acked = 0 ORDER BY finished_at, id LIMIT ?",
            (-1 if limit is None else int(limit),),
        )
        out = []
        for (item_id,) in rows:
            result = self.result(str(item_id))
            if result is not None:
                out.append(result)
        return out

    def pending_count(self) -> int:
        return int(self._read("SELECT count(*) FROM items WHERE state = 'finished' AND acked = 0")[0][0])


def _settle(entry: JournalEntry) -> tuple[str, str]:
    """The honest status of an item a crash left running."""
    commands = entry.item.commands
    sent = entry.sending if entry.sending is not None else -1
    responses = entry.responses
    if len(responses) == sent + 1 and sent >= 0:
        last = responses[-1]
        sw = int.from_bytes(last[-2:], "big") if len(last) >= 2 else -1
        if sw < 0 or not sw_matches(sw, commands[sent].expect):
            return (
                "failed",
                f"command {sent}: SW {last[-2:].hex().upper()} not expected (settled after a restart)",
            )
        if sent == len(commands) - 1:
            return "completed", "settled after a restart"
        return "interrupted", f"agent restarted after command {sent}; commands {sent + 1}.. were not sent"
    return "interrupted", f"agent restarted while sending command {sent}; its outcome is unknown"
