"""Django's Redis cache with one connection pool per server and process.

``django.core.cache.caches`` hands out a cache object per thread *and per asyncio task* (it is an
``asgiref`` ``Local``), and Django's ``RedisCacheClient`` keeps its connection pool on that object.
Under the ASGI server every request is its own task, so every request built a new pool and opened
a new Redis connection (connect, HELLO, client info): py-spy put a third of an idle agent poll's
time there. Here the pools live at module level, keyed by server URL, options and process id
(a forked Celery child builds its own); ``redis-py``'s pools are thread-safe.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_pools: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


class SharedPoolRedisCacheClient(RedisCacheClient):
    def _get_connection_pool(self, write: bool) -> Any:
        index = self._get_connection_pool_index(write)
        key = (self._servers[index], repr(sorted(self._pool_options.items(), key=str)), os.getpid())
        pool = _pools.get(key)
        if pool is None:
            with _lock:
                pool = _pools.get(key)
                if pool is None:
                    pool = _pools[key] = self._pool_class.from_url(self._servers[index], **self._pool_options)
        return pool


class SharedPoolRedisCache(RedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedPoolRedisCacheClient
