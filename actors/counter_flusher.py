"""Counter flusher: a detached Ray actor that writes dirty like/comment counts to Postgres.

Its loop runs on a BackgroundLoop, so when Ray restarts the actor after a crash the loop starts
again by itself; the work it was doing is still in Redis' `flushing` set (see
dmb.domain.counters) and is picked up on the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from actors.background import BackgroundLoop, ensure_singleton
from dmb.domain.counters import Counters
from dmb.settings import load_settings
from dmb.stores.postgres import Database
from dmb.stores.redis import create_redis

NAME = "counter-flusher"
log = logging.getLogger("dmb.counter_flusher")


class CounterFlusher:
    def __init__(self) -> None:
        self._settings = load_settings()
        self._flushed = 0
        self._passes = 0
        self._loop = BackgroundLoop(NAME, self._run)

    async def _run(self, stop: threading.Event) -> None:
        redis = create_redis(self._settings)
        db = Database(self._settings, redis)
        await db.open()
        counters = Counters(db, redis)
        try:
            while not stop.is_set():
                try:
                    self._flushed += await counters.flush()
                    self._passes += 1
                except Exception:
                    log.exception("counter flush failed; retrying next interval")
                await asyncio.sleep(self._settings.counter_flush_seconds)
        finally:
            await db.close()
            await redis.aclose()

    def stats(self) -> dict[str, int]:
        return {"posts_flushed": self._flushed, "passes": self._passes}


def ensure_running() -> Any:
    """The one flusher of this cluster, created on first call (idempotent across replicas)."""
    return ensure_singleton(CounterFlusher, NAME)
