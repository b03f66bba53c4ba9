"""Feed consumers: a group of actors reading the change topics (one Kafka consumer group, the
partitions shared among them), each handing events to the feed's event handler, which hands
fan-out batches to that consumer's own pool of workers.

The poll, commit and replay loop is the one both consumer groups share
(actors.change_consumer): offsets are committed only after an event's fan-out is complete, a
failure replays instead of dropping, a poison event ends in the dead-letter topic.

A consumer that Ray restarts after a crash runs its constructor again with the arguments it was
first created with; it asks the PipelineSupervisor for its current share of the pool instead,
so it comes back at the configured size (and the supervisor checks every few seconds anyway).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray import serve
from ray.util.metrics import Gauge

from actors.background import ensure_singleton
from actors.change_consumer import ChangeConsumer, EventHandler
from actors.fanout_pool import FanoutPool
from dmb.composition import Components
from dmb.stores.change_events import FEED_TOPICS, decode_event

GROUP = "dmb-feed"
SUPERVISOR = ("PipelineSupervisor", "pipeline")  # deployment, application
log = logging.getLogger("dmb.feed_consumer")


def name_of(index: int) -> str:
    return f"feed-consumer-{index}"


class FeedConsumer(ChangeConsumer):
    """`bootstrap` replaces the settings' broker address (tests: a broker that is not up yet)."""

    SPAN = "feed handle"
    LOGGER = log.name  # the module's own logger: its lines and the loop's read alike
    TOPICS = FEED_TOPICS

    def __init__(
        self, index: int, workers: int, group_id: str = GROUP, bootstrap: str | None = None
    ) -> None:
        self._index = index
        self._desired = workers
        # Restarted by Ray: `workers` is the size it was first created with; the run asks the
        # supervisor for the current one before it makes the pool and consumes anything.
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._pool: FanoutPool | None = None if restarted else FanoutPool(workers)
        self._started_with = 0 if restarted else workers
        super().__init__(
            name_of(index),
            group_id,
            bootstrap,
            # One series per consumer actor (Ray tags each with its worker): sum() is the count.
            Gauge("dmb_feed_consumers", description="Feed consumers running"),
        )

    def resize(self, workers: int) -> int:
        """Change the pool size while running; in-flight batches finish on their workers."""
        self._desired = workers
        if self._pool is not None and workers != self._pool.size:
            self._pool.resize(workers)
        return workers

    def worker_pids(self) -> list[int]:
        return self._pool.worker_pids() if self._pool else []

    def stats(self) -> dict[str, int]:
        pool = self._pool
        return {
            **super().stats(),
            "workers": pool.size if pool else 0,
            "started_with": self._started_with,  # workers, when this incarnation started
            "batches": pool.batches_sent if pool else 0,
            "in_flight": pool.in_flight if pool else 0,
        }

    async def _handler(self, components: Components) -> EventHandler:
        if self._pool is None:
            self._desired = await _configured_share(self._index, fallback=self._desired)
            self._pool = FanoutPool(self._desired)
            self._started_with = self._desired
        return components.feed_event_handler(self._pool)

    def _decode(self, topic: str, value: Any) -> Any:
        return decode_event(topic, value)

    def _report(self) -> None:
        if self._pool is not None:
            self._pool.report()


async def _configured_share(index: int, fallback: int) -> int:
    """This consumer's pool share as the supervisor has it configured now (`fallback` when the
    supervisor cannot answer in time: its next check corrects the size)."""
    try:
        handle = serve.get_deployment_handle(*SUPERVISOR)
        share = int(await asyncio.wait_for(handle.share_of.remote(index), timeout=10))
    except Exception as exc:  # the supervisor is restarting too; it resizes us when it is back
        log.warning("no answer from the supervisor (%r); starting with %d workers", exc, fallback)
        return fallback
    return share or fallback


def start(index: int, workers: int) -> Any:
    """Consumer `index` of the group (created with a pool of `workers` on first call)."""
    return ensure_singleton(FeedConsumer, name_of(index), index, workers)
