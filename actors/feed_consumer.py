"""Feed consumer: reads change events from Kafka and drives the fan-out pool.

Offsets are committed only after an event's fan-out is complete. If handling fails, the
consumer seeks back to the first unhandled record of each partition and commits only what was
done, so a crash or an error replays instead of dropping.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from actors.background import BackgroundLoop, ensure_singleton
from actors.fanout_pool import FanoutPool
from dmb.domain.feed import FeedWriter, HomeFeed
from dmb.domain.feed_events import FeedEventHandler
from dmb.domain.posts import Posts
from dmb.settings import load_settings
from dmb.stores.kafka import create_consumer, decode
from dmb.stores.postgres import Database
from dmb.stores.redis import create_redis

NAME = "feed-consumer"
TOPICS = ["dmb.public.posts", "dmb.public.follows"]
log = logging.getLogger("dmb.feed_consumer")


class FeedConsumer:
    def __init__(self, workers: int, group_id: str = "dmb-feed") -> None:
        self._settings = load_settings()
        self._group_id = group_id
        self.pool = FanoutPool(workers)
        self._handled = 0
        self._loop = BackgroundLoop(NAME, self._run)

    def resize(self, workers: int) -> int:
        """Change the pool size while running; in-flight batches finish on their workers."""
        self.pool.resize(workers)
        return self.pool.size

    def worker_pids(self) -> list[int]:
        return self.pool.worker_pids()

    def stats(self) -> dict[str, int]:
        return {
            "handled": self._handled,
            "workers": self.pool.size,
            "in_flight": self.pool.in_flight,
        }

    async def _run(self, stop: threading.Event) -> None:
        settings = self._settings
        assert settings.kafka_bootstrap is not None
        redis = create_redis(settings)
        db = Database(settings, redis)
        await db.open()
        home = HomeFeed(settings, db, redis, Posts(db, redis))
        handler = FeedEventHandler(
            settings, db, FeedWriter(redis, settings.feed_max_length), home, self.pool.run
        )
        consumer = create_consumer(settings.kafka_bootstrap, self._group_id, TOPICS)
        try:
            while not stop.is_set():
                records = await asyncio.to_thread(consumer.poll, 500)
                await self._handle(consumer, handler, records)
        finally:
            consumer.close()
            await db.close()
            await redis.aclose()

    async def _handle(self, consumer: Any, handler: FeedEventHandler, records: Any) -> None:
        done = set()
        for partition, messages in records.items():
            for message in messages:
                try:
                    await handler.handle(message.topic, decode(message.value))
                except Exception:
                    log.exception("event %s@%s failed; will replay", partition, message.offset)
                    consumer.seek(partition, message.offset)
                    for other, rest in records.items():  # partitions not reached yet
                        if other != partition and other not in done and rest:
                            consumer.seek(other, rest[0].offset)
                    await asyncio.to_thread(consumer.commit)  # commits what was done only
                    await asyncio.sleep(1)
                    return
                self._handled += 1
            done.add(partition)
        if records:
            await asyncio.to_thread(consumer.commit)


def ensure_running(workers: int) -> Any:
    return ensure_singleton(FeedConsumer, NAME, workers)
