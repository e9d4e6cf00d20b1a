"""A long poll never fails the exchange because the channel layer does: a Redis timeout while held
(redis.exceptions.TimeoutError is not the built-in TimeoutError) or a layer that cannot even join the
device's group degrades to re-reading the has-work marker (found by bench/switch_campaign)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.exceptions

from jobs import wake


class BrokenLayer:
    def __init__(self, *, join: bool) -> None:
        self.join = join
        self.receives = 0

    async def new_channel(self) -> str:
        return "specific.test!1"

    async def group_add(self, group: str, channel: str) -> None:
        if not self.join:
            raise redis.exceptions.ConnectionError("Redis is down")

    async def group_discard(self, group: str, channel: str) -> None:
        raise redis.exceptions.TimeoutError("slow")

    async def receive(self, channel: str) -> Any:
        self.receives += 1
        raise redis.exceptions.TimeoutError("Timeout reading from socket")


@pytest.mark.parametrize("join", [True, False])
def test_a_failing_layer_degrades_to_the_marker(monkeypatch: pytest.MonkeyPatch, join: bool) -> None:
    layer = BrokenLayer(join=join)
    monkeypatch.setattr(wake, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(wake, "RECHECK_SECONDS", 0.05)
    reads = {"n": 0}

    async def ready() -> bool:
        reads["n"] += 1
        return reads["n"] >= 3  # work shows up on the third look

    held = asyncio.run(wake.hold("dev-1", 2.0, ready))
    if join:
        assert held is True and layer.receives >= 2 and reads["n"] == 3  # held, re-reading the marker
    else:
        assert held is False and reads["n"] == 1 and layer.receives == 0  # answered at once: poll again

    async def never() -> bool:
        return False

    assert asyncio.run(wake.hold("dev-1", 0.2, never)) is False  # and times out as usual
