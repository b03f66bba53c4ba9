"""The notifications consumer: one actor in a consumer group of its own (`dmb-notifications`)
on the follows, likes, comments and mentions topics, handing each event to the domain's
NotificationHandler (dmb/domain/notifications.py), which writes the recipient's notification to
Postgres.

It runs the loop both consumer groups share (actors.change_consumer: poll, paced commits,
seek-back-and-replay on a failure, dead letters after repeated failures, lag gauges, restarts by
BackgroundLoop and Ray): at-least-once, and the handler is idempotent, so whatever is replayed
writes nothing twice. Its group is independent of the feed's, so either can lag or restart
without holding up the other. One actor takes every partition; the handler is a single insert
per event, far cheaper than a fan-out, so one keeps up with the feed's group.
"""

from __future__ import annotations

from typing import Any

from ray.util.metrics import Gauge

from actors.background import ensure_singleton
from actors.change_consumer import ChangeConsumer, EventHandler
from dmb.composition import Components
from dmb.stores.change_events import NOTIFICATION_TOPICS, decode_notification_event

GROUP = "dmb-notifications"
NAME = "notification-consumer"


class NotificationConsumer(ChangeConsumer):
    """`bootstrap` replaces the settings' broker address (tests: a broker that is not up yet)."""

    SPAN = "notifications handle"
    LOGGER = "dmb.notification_consumer"
    TOPICS = NOTIFICATION_TOPICS

    def __init__(self, group_id: str = GROUP, bootstrap: str | None = None) -> None:
        super().__init__(
            NAME,
            group_id,
            bootstrap,
            Gauge("dmb_notification_consumers", description="Notification consumers running"),
        )

    def resize(self, workers: int) -> int:
        return 0  # no fan-out pool

    async def _handler(self, components: Components) -> EventHandler:
        return components.notification_handler

    def _decode(self, topic: str, value: Any) -> Any:
        return decode_notification_event(topic, value)


def start() -> Any:
    """The cluster's notifications consumer (created on first call)."""
    return ensure_singleton(NotificationConsumer, NAME)
