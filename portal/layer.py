"""Sending to channel-layer groups from synchronous code (services, on-commit hooks, Celery tasks).

``async_to_sync(layer.group_send)`` called outside an ASGI server (a Celery worker, the sweeper)
makes a new event loop for every call, and ``channels_redis`` a new Redis connection pool for
every loop: connect, send, close, for each live event and each gateway wake-up (a fifth of a
worker's time per job step, measured with py-spy in ``bench.job_latency``). Here such calls run on
one long-lived event loop per process (started lazily, again after a fork), so the Redis layer
keeps its connections. Inside the ASGI server's own threads ``async_to_sync`` already runs on the
server's loop and is used as is; so is an in-memory layer (its queues belong to their loop).
Sending stays synchronous: the caller sees errors and ordering is kept.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

SEND_TIMEOUT = 10.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def _sender_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="channel-layer-sender", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def _on_server_loop() -> bool:
    main = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return bool(main is not None and main.is_running())


def _in_event_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def group_send_many(messages: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Send each ``(group, message)`` in order; raises what the layer raises."""
    batch = list(messages)
    layer = get_channel_layer()
    if layer is None or not batch:
        return

    async def send_all() -> None:
        for group, message in batch:
            await layer.group_send(group, message)

    in_memory = type(layer).__name__ == "InMemoryChannelLayer"
    if in_memory or _on_server_loop() or _in_event_loop_thread():
        async_to_sync(send_all)()
        return
    future = asyncio.run_coroutine_threadsafe(send_all(), _sender_loop())
    future.result(timeout=SEND_TIMEOUT)


__all__ = ["group_send_many"]
