"""One agent per journal: ``agent run`` holds an exclusive lock while it runs.

Two agents on one configuration would both run the portal's work on one card (and a soft card's
sequence counters must have a single writer), and ``python -m agent doctor`` must not open a card
that a running agent is using. So ``run`` takes ``flock(LOCK_EX)`` on ``<journal>.lock`` for its
lifetime; the kernel releases it when the process ends, however it ends. The file holds the pid
of the holder, for messages only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from agent.errors import ConfigError

__all__ = ["AgentRunning", "InstanceLock", "journal_lock", "lock_path", "probe_lock"]


class AgentRunning(ConfigError):
    """Another process holds the journal lock (an agent is running with this configuration)."""


def lock_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


class InstanceLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def journal_lock(journal: Path) -> InstanceLock:
    """``agent run``: take the lock of ``journal``; :class:`AgentRunning` if another process holds it."""
    lock = _lock(journal, create=True)
    assert lock is not None
    return lock


def probe_lock(journal: Path) -> InstanceLock | None:
    """The doctor: the lock of ``journal`` (:class:`AgentRunning` if held), or None when no agent
    ever ran here. It never creates the file: run as root it would leave one the agent's user
    cannot open."""
    return _lock(journal, create=False)


def _lock(journal: Path, *, create: bool) -> InstanceLock | None:
    path = lock_path(journal)
    if create:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    else:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = os.pread(fd, 32, 0).decode("ascii").strip()
        os.close(fd)
        raise AgentRunning(
            f"another agent is running with journal {journal}" + (f" (pid {holder})" if holder else "")
        ) from None
    except BaseException:
        os.close(fd)
        raise
    if create:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return InstanceLock(fd, path)
