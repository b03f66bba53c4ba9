"""Feed consumer: reads change events from Kafka and hands them to the feed's event handler,
which hands fan-out batches to this actor's pool.

Offsets are committed only after an event's fan-out is complete. If handling fails, the
consumer seeks back to the first unhandled record of each partition and commits only what was
done, so a crash or an error replays instead of dropping.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from actors.background import BackgroundLoop, LoopingActor, ensure_singleton
from actors.fanout_pool import FanoutPool
from dmb.composition import process_components
from dmb.domain.feed_events import FeedEventHandler
from dmb.stores.change_events import FEED_TOPICS, decode_event
from dmb.stores.kafka import create_consumer, decode

NAME = "feed-consumer"
log = logging.getLogger("dmb.feed_consumer")


class FeedConsumer(LoopingActor):
    def __init__(self, workers: int, group_id: str = "dmb-feed") -> None:
        self._components = process_components()
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
        components = self._components
        bootstrap = components.settings.kafka_bootstrap
        assert bootstrap is not None
        await components.ready()
        handler = components.feed_event_handler(self.pool)
        consumer = create_consumer(bootstrap, self._group_id, list(FEED_TOPICS))
        try:
            while not stop.is_set():
                records = await asyncio.to_thread(consumer.poll, 500)
                await self._handle(consumer, handler, records)
        finally:
            consumer.close()

    async def _handle(self, consumer: Any, handler: FeedEventHandler, records: Any) -> None:
        done = set()
        for partition, messages in records.items():
            for message in messages:
                try:
                    event = decode_event(message.topic, decode(message.value))
                    if event is not None:
                        await handler.handle(event)
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


def start(workers: int) -> Any:
    """The cluster's one feed consumer (created with a pool of `workers` on first call)."""
    return ensure_singleton(FeedConsumer, NAME, workers)
