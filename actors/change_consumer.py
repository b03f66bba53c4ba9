"""The loop both consumer groups run (feed, notifications): poll the change topics, hand each
event to the domain's handler, commit what was handled.

At least once: offsets are committed only for events whose handling is complete. If handling
fails, the consumer seeks back to the first unhandled record of each partition and commits only
what was done, so a crash or an error replays instead of dropping. A commit that a rebalance
refuses is tried again after the next poll (the consumer stays in the group; its partitions'
next owner replays from the last commit). A failure of the Kafka client itself (the broker not
up yet or gone) ends the run, whose `finally` closes its consumer; BackgroundLoop starts a new
run after a capped backoff, with a new consumer that rejoins the group and resumes from the
committed offsets, so whatever was handled but not committed is replayed (the handlers are
idempotent).

Commits are paced (`CommitPacer`): one per `COMMIT_EVERY_SECONDS` while events keep coming, and
at once when a poll comes back empty, instead of one broker round trip per poll. A crash replays
at most that second's events, which the idempotent handlers absorb; under a steady stream the
commits no longer cost a round trip per event on the consumer and on the broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import ray
from ray.util.metrics import Counter, Gauge

from actors.background import BackgroundLoop, LoopingActor
from dmb import tracing
from dmb.composition import Components, process_components
from dmb.stores import dead_letters
from dmb.stores.kafka import commit, consumer_lag, create_consumer, decode

LAG_EVERY_SECONDS = 5.0  # how often a consumer refreshes dmb_consumer_lag_messages
COMMIT_EVERY_SECONDS = 1.0  # the longest a handled event waits for its commit under a stream
POLL_MS = 500


class EventHandler(Protocol):
    async def handle(self, event: Any) -> None: ...


@dataclass
class CommitPacer:
    """When to commit: handled events wait for a commit at most `every` seconds while polls keep
    returning records, and are committed as soon as a poll comes back empty (the stream paused,
    so a commit costs nothing anyone waits for)."""

    every: float = COMMIT_EVERY_SECONDS
    clock: Callable[[], float] = time.monotonic
    pending: bool = False
    _since: float = 0.0

    def handled(self) -> None:
        """Events were handled and are not committed yet."""
        if not self.pending:
            self.pending = True
            self._since = self.clock()

    def due(self, at_once: bool) -> bool:
        """`at_once`: the stream paused (an empty poll) or an event failed."""
        return self.pending and (at_once or self.clock() - self._since >= self.every)

    def committed(self) -> None:
        self.pending = False


class ChangeConsumer(LoopingActor):
    """One consumer of a group. A subclass names its topics, decodes a record into its domain's
    event (None: not one it acts on) and makes its handler."""

    SPAN: ClassVar[str]
    TOPICS: ClassVar[tuple[str, ...]]
    LOGGER: ClassVar[str]  # the group's own logger name, which its log lines keep

    def __init__(self, name: str, group_id: str, bootstrap: str | None, running: Gauge) -> None:
        """`bootstrap` replaces the settings' broker address (tests: a broker not up yet);
        `running`: the gauge this consumer sets to 1 while it runs."""
        self._log = logging.getLogger(self.LOGGER)
        self._components = process_components()
        self._group_id = group_id
        self._bootstrap = bootstrap or self._components.settings.kafka_bootstrap
        self._handled = 0
        self._commits = 0
        self._lag = Gauge(
            "dmb_consumer_lag_messages",
            description="End offset minus this group's position, per partition",
            tag_keys=("topic", "partition"),
        )
        self._consumers = running
        self._dead_lettered = Counter(
            "dmb_dlq_events_total",
            description="Change events sent to the dead-letter topic after repeated failures",
            tag_keys=("topic",),
        )
        self._failures: dict[tuple[str, int, int], int] = {}  # origin -> failed attempts
        self._dead_letters: dead_letters.DeadLetterWriter | None = None
        self._loop = BackgroundLoop(name, self._run)

    async def _handler(self, components: Components) -> EventHandler:
        raise NotImplementedError

    def _decode(self, topic: str, value: Any) -> Any:
        raise NotImplementedError

    def _report(self) -> None:
        """Every few seconds, beside the lag: a subclass refreshes gauges of its own."""

    def stats(self) -> dict[str, int]:
        return {"handled": self._handled, "commits": self._commits, "pid": os.getpid()}

    async def _run(self, stop: threading.Event) -> None:
        bootstrap = self._bootstrap
        assert bootstrap is not None
        await self._components.ready()
        handler = await self._handler(self._components)
        # On a thread: bootstrapping against an absent broker blocks for seconds, and the event
        # loop must keep serving the store clients meanwhile.
        consumer = await asyncio.to_thread(
            create_consumer, bootstrap, self._group_id, list(self.TOPICS)
        )
        self._consumers.set(1)
        pacer = CommitPacer()
        lag_due = 0.0
        try:
            while not stop.is_set():
                records = await asyncio.to_thread(consumer.poll, POLL_MS)
                failed = await self._handle(consumer, handler, records)
                if records:
                    pacer.handled()
                # An empty poll (the stream paused) or a failure (what was done is committed
                # before the replay) commits at once; a refused commit stays due.
                if pacer.due(at_once=failed or not records) and await self._commit(consumer):
                    pacer.committed()
                if failed:
                    await asyncio.sleep(1)  # then the replay, not a hot loop of failures
                self._progressed()
                if time.monotonic() >= lag_due:
                    lag_due = time.monotonic() + LAG_EVERY_SECONDS
                    await self._report_lag(consumer)
            if pacer.pending:  # stopping: what was handled is not replayed by the next owner
                await self._commit(consumer)
        finally:
            self._consumers.set(0)
            consumer.close()  # leaves the group at once: the others take its partitions now

    async def _commit(self, consumer: Any) -> bool:
        """Commit the consumer's positions (every record polled so far was handled). False if a
        rebalance refused it: the loop polls on, which completes the rebalance, and the pacer
        keeps the commit due. Before, that error ended the run, and the new consumer's joining
        started the next rebalance, in which the others' commits failed the same way."""
        if not await asyncio.to_thread(commit, consumer):
            return False
        self._commits += 1
        return True

    async def _report_lag(self, consumer: Any) -> None:
        """Refresh the lag gauges, in the polling thread's turn (the client is not thread-safe);
        a broker that does not answer costs one stale sample, not the loop."""
        self._consumers.set(1)  # re-set: a value set once may predate the metrics export
        self._report()
        try:
            lag = await asyncio.to_thread(consumer_lag, consumer)
        except Exception as exc:
            self._log.warning("consumer lag unavailable: %r", exc)
            return
        for (topic, partition), messages in lag.items():
            self._lag.set(messages, tags={"topic": topic, "partition": str(partition)})

    async def _handle(self, consumer: Any, handler: EventHandler, records: Any) -> bool:
        """Handle a poll's records in order. True if one failed: the consumer was then sought
        back to the first unhandled record of each partition, so the next poll replays it."""
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
                        event = self._decode(message.topic, decode(message.value))
                        if event is not None:
                            await handler.handle(event)
                        self._log.debug("handled %s@%s: %s", partition, message.offset, event)
                    if self._failures:
                        self._failures.pop((message.topic, message.partition, message.offset), None)
                except Exception as exc:
                    if await self._gave_up_on(message, exc):
                        continue  # dead-lettered: the partition moves on
                    self._log.exception(
                        "event %s@%s failed; will replay", partition, message.offset
                    )
                    consumer.seek(partition, message.offset)
                    for other, rest in records.items():  # partitions not reached yet
                        if other != partition and other not in done and rest:
                            consumer.seek(other, rest[0].offset)
                    return True  # the positions are what was done: a commit takes only that
                self._handled += 1
            done.add(partition)
        return False

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
            self._log.warning(
                "could not dead-letter %s@%s (%r); will replay", origin, attempts, exc
            )
            return False
        self._failures.pop(origin, None)
        self._dead_lettered.inc(1, tags={"topic": message.topic})
        self._log.error(
            "event %s partition %s offset %s failed %d times (%s): sent to %s, moving on",
            *origin,
            attempts,
            entry["error"],
            dead_letters.TOPIC,
        )
        return True
