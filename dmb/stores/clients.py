"""The store clients one process shares: one Redis client and the Postgres pools.

Built once per process by the composition root (`dmb.composition`). Serve constructs replicas
synchronously while the Postgres pools need a running event loop, so the pools open on the first
`ready()` (the RPC boundary awaits it before every call; a no-op after the first).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from dmb.settings import Settings
from dmb.stores.postgres import Database
from dmb.stores.redis import create_redis


class StoreClients:
    def __init__(self, settings: Settings) -> None:
        self.redis: aioredis.Redis = create_redis(settings)
        self.db = Database(settings, self.redis)
        self._opened = False
        self._lock = asyncio.Lock()

    async def ready(self) -> None:
        if self._opened:
            return
        async with self._lock:
            if not self._opened:
                await self.db.open()
                self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.db.close()
            self._opened = False
        await self.redis.aclose()
