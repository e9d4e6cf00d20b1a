"""The Redis cache keeps one connection pool per server and process, however many cache objects
Django hands out (one per thread and per asyncio task: every ASGI request used to open a new
Redis connection)."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from portal.cache import SharedPoolRedisCache

pytestmark = pytest.mark.services


def test_cache_objects_of_different_tasks_share_one_pool_and_see_the_same_data(redis_url: str) -> None:
    made: list[SharedPoolRedisCache] = []

    async def one_request(n: int) -> object:
        cache = SharedPoolRedisCache(redis_url, {"KEY_PREFIX": "test-pool"})
        made.append(cache)
        key = f"k-{uuid.uuid4().hex}"
        await asyncio.to_thread(cache.set, key, n, 30)
        return await asyncio.to_thread(cache.get, key)

    async def many() -> list[object]:
        return await asyncio.gather(*(one_request(n) for n in range(8)))

    # given eight "requests", each with its own cache object (as Django's per-task caches are)
    assert asyncio.run(many()) == list(range(8))
    # then all of them used one pool (one set of connections), not eight
    pools = {id(c._cache._get_connection_pool(True)) for c in made}
    assert len(pools) == 1
    pool = made[0]._cache._get_connection_pool(True)
    assert pool.pid == os.getpid()
    assert len(pool._available_connections) + len(pool._in_use_connections) <= 8
