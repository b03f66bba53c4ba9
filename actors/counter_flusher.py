"""Counter flusher: a detached Ray actor that writes dirty like/comment counts to Postgres.

Runs its loop on a thread of its own, started in the constructor, so that when Ray restarts the
actor after a crash (max_restarts=-1) the loop starts again by itself; the work it was doing is
still in Redis' `flushing` set (see dmb.domain.counters) and is picked up on the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import ray

from dmb.domain.counters import Counters
from dmb.settings import load_settings
from dmb.stores.postgres import Database
from dmb.stores.redis import create_redis

NAME = "counter-flusher"
NAMESPACE = "dmb"
log = logging.getLogger("dmb.counter_flusher")


class CounterFlusher:
    def __init__(self) -> None:
        self._settings = load_settings()
        self._stop = threading.Event()
        self._flushed = 0
        self._passes = 0
        self._thread = threading.Thread(target=self._run, name=NAME, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        redis = create_redis(self._settings)
        db = Database(self._settings, redis)
        await db.open()
        counters = Counters(db, redis)
        try:
            while not self._stop.is_set():
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
    actor_class: Any = ray.remote(CounterFlusher)
    return actor_class.options(
        name=NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        num_cpus=0,
    ).remote()
