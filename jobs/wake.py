"""Waking a gateway whose exchange is held open (long poll, DESIGN §8).

An exchange that may be held (results just reported, or an idle agent that asked to ``wait``)
joins the device's channel group and sleeps on a channel of its own; the engine, once a step for
the device is ready and committed, sends one message to that group. Joining happens *before* the
"has work" marker is read again, so a step that became ready in between is seen either by the
read or by the message: no wake-up is lost. The whole path is cache/channel-layer only: a held
exchange costs no database query.

A broken channel layer (or an in-memory layer written to from another thread's event loop) degrades
to reading the marker every ``RECHECK_SECONDS`` while held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import get_channel_layer

from portal.layer import group_send_many

log = logging.getLogger(__name__)

WAKE = "agent.wake"
RECHECK_SECONDS = 1.0  # the marker is read again this often while held, whatever the layer does


def device_group(device_id: Any) -> str:
    return f"agent.{device_id}"


def wake(device_id: Any) -> None:
    """Tell a held exchange of ``device_id`` (if any) that work is ready. Never raises."""
    try:
        group_send_many([(device_group(device_id), {"type": WAKE})])
    except Exception:  # noqa: BLE001 - the marker still holds the work; the agent polls again
        log.warning("agent wake-up not delivered device=%s", device_id, exc_info=True)


async def hold(device_id: Any, timeout: float, ready: Callable[[], Awaitable[bool]]) -> bool:
    """Wait up to ``timeout`` seconds for work for ``device_id``; True when ``ready()`` says so.

    ``ready`` reads the has-work marker; it is called once after joining the group (the race
    above) and again after each wake-up."""
    layer = get_channel_layer()
    if layer is None or timeout <= 0:
        return await ready()
    group = device_group(device_id)
    try:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
    except Exception:  # noqa: BLE001 - no layer (Redis down or slow): answer now, the agent polls again
        log.warning("long poll of device %s not held: the channel layer failed", device_id, exc_info=True)
        return await ready()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await ready():
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(layer.receive(channel), min(left, RECHECK_SECONDS))
            except TimeoutError:
                pass  # a wake-up lost by the layer costs at most RECHECK_SECONDS
            except Exception:  # noqa: BLE001 - e.g. redis.exceptions.TimeoutError (not a TimeoutError)
                log.warning("channel layer receive failed for device %s", device_id, exc_info=True)
                await asyncio.sleep(min(left, RECHECK_SECONDS))  # go on by re-reading the marker
    finally:
        with contextlib.suppress(Exception):
            await layer.group_discard(group, channel)
