"""The notifications consumer: one actor in a consumer group of its own (`dmb-notifications`)
on the follows, likes, comments and mentions topics, handing each event to the domain's
NotificationHandler (dmb/domain/notifications.py), which writes the recipient's notification to
Postgres.

It is the feed consumer's loop without the fan-out pool (same poll, seek-back-and-replay on a
failure, dead letters after repeated failures, lag gauges, restarts by BackgroundLoop and Ray):
at-least-once, and the handler is idempotent, so whatever is replayed writes nothing twice. Its
group is independent of the feed's, so either can lag or restart without holding up the other.
One actor takes every partition; the handler is a single insert per event, far cheaper than a
fan-out, so one keeps up with the feed's group.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ray.util.metrics import Counter, Gauge

from actors.background import BackgroundLoop, ensure_singleton
from actors.feed_consumer import FeedConsumer
from dmb.composition import process_components
from dmb.stores import dead_letters
from dmb.stores.change_events import NOTIFICATION_TOPICS, decode_notification_event
from dmb.stores.kafka import create_consumer, decode

GROUP = "dmb-notifications"
NAME = "notification-consumer"


class NotificationConsumer(FeedConsumer):
    """`bootstrap` replaces the settings' broker address (tests: a broker that is not up yet)."""

    SPAN = "notifications handle"

    def __init__(self, group_id: str = GROUP, bootstrap: str | None = None) -> None:
        self._components = process_components()
        self._index = 0
        self._group_id = group_id
        self._bootstrap = bootstrap or self._components.settings.kafka_bootstrap
        self._desired = 0
        self._pool = None
        self._started_with = 0
        self._handled = 0
        self._lag = Gauge(
            "dmb_consumer_lag_messages",
            description="End offset minus this group's position, per partition",
            tag_keys=("topic", "partition"),
        )
        self._consumers = Gauge(
            "dmb_notification_consumers", description="Notification consumers running"
        )
        self._dead_lettered = Counter(
            "dmb_dlq_events_total",
            description="Change events sent to the dead-letter topic after repeated failures",
            tag_keys=("topic",),
        )
        self._failures: dict[tuple[str, int, int], int] = {}
        self._dead_letters: dead_letters.DeadLetterWriter | None = None
        self._loop = BackgroundLoop(NAME, self._run)

    def resize(self, workers: int) -> int:
        return 0  # no fan-out pool

    def _decode(self, topic: str, value: Any) -> Any:
        return decode_notification_event(topic, decode(value))

    async def _run(self, stop: threading.Event) -> None:
        components = self._components
        bootstrap = self._bootstrap
        assert bootstrap is not None
        await components.ready()
        handler = components.notification_handler
        consumer = await asyncio.to_thread(
            create_consumer, bootstrap, self._group_id, list(NOTIFICATION_TOPICS)
        )
        self._consumers.set(1)
        lag_due = 0.0
        try:
            while not stop.is_set():
                records = await asyncio.to_thread(consumer.poll, 500)
                await self._handle(consumer, handler, records)
                self._progressed()
                if time.monotonic() >= lag_due:
                    lag_due = time.monotonic() + 5.0
                    await self._report_lag(consumer)
        finally:
            self._consumers.set(0)
            consumer.close()


def start() -> Any:
    """The cluster's notifications consumer (created on first call)."""
    return ensure_singleton(NotificationConsumer, NAME)
