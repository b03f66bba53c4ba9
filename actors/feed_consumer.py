"""Feed consumers: a group of actors reading the change topics (one Kafka consumer group, the
partitions shared among them), each handing events to the feed's event handler, which hands
fan-out batches to that consumer's own pool of workers.

Offsets are committed only after an event's fan-out is complete. If handling fails, the
consumer seeks back to the first unhandled record of each partition and commits only what was
done, so a crash or an error replays instead of dropping. A failure of the Kafka client itself
(the broker not up yet or gone, a `CommitFailedError` after a rebalance took the partitions
away) ends the run, whose `finally` closes its consumer; BackgroundLoop starts a new run after
a capped backoff, with a new consumer that rejoins the group and resumes from the committed
offsets, so whatever was handled but not committed is replayed (fan-out writes are idempotent).

A consumer that Ray restarts after a crash runs its constructor again with the arguments it was
first created with; it asks the PipelineSupervisor for its current share of the pool instead,
so it comes back at the configured size (and the supervisor checks every few seconds anyway).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any, Protocol

import ray
from ray import serve
from ray.util.metrics import Counter, Gauge

from actors.background import BackgroundLoop, LoopingActor, ensure_singleton
from actors.fanout_pool import FanoutPool
from dmb import tracing
from dmb.composition import process_components
from dmb.stores import dead_letters
from dmb.stores.change_events import FEED_TOPICS, decode_event
from dmb.stores.kafka import consumer_lag, create_consumer, decode

GROUP = "dmb-feed"
SUPERVISOR = ("PipelineSupervisor", "pipeline")  # deployment, application
log = logging.getLogger("dmb.feed_consumer")
LAG_EVERY_SECONDS = 5.0  # how often a consumer refreshes dmb_consumer_lag_messages


class EventHandler(Protocol):
    async def handle(self, event: Any) -> None: ...


def name_of(index: int) -> str:
    return f"feed-consumer-{index}"


class FeedConsumer(LoopingActor):
    """`bootstrap` replaces the settings' broker address (tests: a broker that is not up yet)."""

    SPAN = "feed handle"

    def __init__(
        self, index: int, workers: int, group_id: str = GROUP, bootstrap: str | None = None
    ) -> None:
        self._components = process_components()
        self._index = index
        self._group_id = group_id
        self._bootstrap = bootstrap or self._components.settings.kafka_bootstrap
        self._desired = workers
        # Restarted by Ray: `workers` is the size it was first created with; the loop asks the
        # supervisor for the current one before it makes the pool and consumes anything.
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._pool = None if restarted else FanoutPool(workers)
        self._started_with = 0 if restarted else workers
        self._handled = 0
        self._lag = Gauge(
            "dmb_consumer_lag_messages",
            description="End offset minus this group's position, per partition",
            tag_keys=("topic", "partition"),
        )
        # One series per consumer actor (Ray tags each with its worker): sum() is the count.
        self._consumers = Gauge("dmb_feed_consumers", description="Feed consumers running")
        self._dead_lettered = Counter(
            "dmb_dlq_events_total",
            description="Change events sent to the dead-letter topic after repeated failures",
            tag_keys=("topic",),
        )
        self._failures: dict[tuple[str, int, int], int] = {}  # origin -> failed attempts
        self._dead_letters: dead_letters.DeadLetterWriter | None = None
        self._loop = BackgroundLoop(name_of(index), self._run)

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
            "handled": self._handled,
            "workers": pool.size if pool else 0,
            "started_with": self._started_with,  # workers, when this incarnation started
            "batches": pool.batches_sent if pool else 0,
            "in_flight": pool.in_flight if pool else 0,
            "pid": os.getpid(),
        }

    async def _run(self, stop: threading.Event) -> None:
        components = self._components
        bootstrap = self._bootstrap
        assert bootstrap is not None
        if self._pool is None:
            self._desired = await _configured_share(self._index, fallback=self._desired)
            self._pool = FanoutPool(self._desired)
            self._started_with = self._desired
        await components.ready()
        handler = components.feed_event_handler(self._pool)
        # On a thread: bootstrapping against an absent broker blocks for seconds, and the event
        # loop must keep serving the store clients meanwhile.
        consumer = await asyncio.to_thread(
            create_consumer, bootstrap, self._group_id, list(FEED_TOPICS)
        )
        self._consumers.set(1)
        lag_due = 0.0
        try:
            while not stop.is_set():
                records = await asyncio.to_thread(consumer.poll, 500)
                await self._handle(consumer, handler, records)
                self._progressed()
                if time.monotonic() >= lag_due:
                    lag_due = time.monotonic() + LAG_EVERY_SECONDS
                    await self._report_lag(consumer)
        finally:
            self._consumers.set(0)
            consumer.close()  # leaves the group at once: the others take its partitions now

    async def _report_lag(self, consumer: Any) -> None:
        """Refresh the lag gauges, in the polling thread's turn (the client is not thread-safe);
        a broker that does not answer costs one stale sample, not the loop."""
        self._consumers.set(1)  # re-set: a value set once may predate the metrics export
        if self._pool is not None:
            self._pool.report()
        try:
            lag = await asyncio.to_thread(consumer_lag, consumer)
        except Exception as exc:
            log.warning("consumer lag unavailable: %r", exc)
            return
        for (topic, partition), messages in lag.items():
            self._lag.set(messages, tags={"topic": topic, "partition": str(partition)})

    def _decode(self, topic: str, value: Any) -> Any:
        return decode_event(topic, decode(value))

    async def _handle(self, consumer: Any, handler: EventHandler, records: Any) -> None:
        done = set()
        for partition, messages in records.items():
            for message in messages:
                try:
                    # The record's headers continue the writing request's trace and request id
                    # (the relay put them there); untraced records carry none.
                    with tracing.incoming(
                        tracing.from_headers(message.headers),
                        f"{self.SPAN} {message.topic}",
                        tracing.CONSUMER,
                        {
                            "messaging.system": "kafka",
                            "messaging.destination.name": message.topic,
                            "messaging.kafka.offset": message.offset,
                            "messaging.destination.partition.id": str(message.partition),
                        },
                        continue_only=True,
                    ):
                        event = self._decode(message.topic, message.value)
                        if event is not None:
                            await handler.handle(event)
                        log.debug("handled %s@%s: %s", partition, message.offset, event)
                    if self._failures:
                        self._failures.pop((message.topic, message.partition, message.offset), None)
                except Exception as exc:
                    if await self._gave_up_on(message, exc):
                        continue  # dead-lettered: the partition moves on
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

    async def _gave_up_on(self, message: Any, error: Exception) -> bool:
        """Count one more failure of `message`; at the limit, publish it to the dead-letter
        topic (waiting for the ack) and say so, so the caller skips it. A broker that cannot
        take the dead letter leaves the event to be replayed like any failure."""
        if not dead_letters.counts_towards_the_limit(error, (ray.exceptions.RayError,)):
            return False  # an outage (a store, a fan-out worker): replay until it is over
        origin = (message.topic, message.partition, message.offset)
        attempts = self._failures.get(origin, 0) + 1
        if attempts < self._components.settings.feed_event_max_attempts:
            if len(self._failures) >= 10_000:  # failures of events handled elsewhere since
                self._failures.clear()
            self._failures[origin] = attempts
            return False
        entry = dead_letters.entry_of(message, error, self._group_id, attempts)
        try:
            if self._dead_letters is None:
                assert self._bootstrap is not None
                self._dead_letters = await asyncio.to_thread(
                    dead_letters.DeadLetterWriter, self._bootstrap
                )
            await asyncio.to_thread(self._dead_letters.publish, entry)
        except Exception as exc:
            log.warning("could not dead-letter %s@%s (%r); will replay", origin, attempts, exc)
            return False
        self._failures.pop(origin, None)
        self._dead_lettered.inc(1, tags={"topic": message.topic})
        log.error(
            "event %s partition %s offset %s failed %d times (%s): sent to %s, moving on",
            *origin,
            attempts,
            entry["error"],
            dead_letters.TOPIC,
        )
        return True


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
