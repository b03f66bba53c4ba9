"""Store clients a deployment needs, opened once per replica on first use.

Serve constructs deployments synchronously, while the Postgres pools need a running event loop;
so each deployment holds one `Resources` and awaits `ready()` at the top of every call (a no-op
after the first).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from dmb.domain.identity import TokenVerifier
from dmb.settings import Settings, load_settings
from dmb.stores.postgres import Database
from dmb.stores.redis import create_redis


class Resources:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.redis: aioredis.Redis = create_redis(self.settings)
        self.db = Database(self.settings, self.redis)
        self.verifier = TokenVerifier(self.settings, self.redis)
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
        await self.redis.aclose()
