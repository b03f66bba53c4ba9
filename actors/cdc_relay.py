"""CDC relay: Postgres logical replication slot -> Kafka, at least once.

Polls the slot (wal2json format-version 2, see dmb.stores.cdc), publishes every captured change
as a Debezium-style envelope
(dmb.stores.change_events: topic dmb.public.<table>, key = primary key), waits until the broker
acknowledged all of them (acks=all, idempotent producer), and only then advances the slot.
Killed at any moment, it publishes again from the last advanced position on restart:
duplicates are possible, losses not. A failed pass (Postgres restarted or failed over, the
broker not up yet or gone, the slot invalidated) ends the run; BackgroundLoop reconnects after a
capped exponential backoff and the relay resumes from the slot. `dmb_cdc_lag_seconds` is
recomputed every second from `cdc.LagClock`, so it grows while the relay is stuck.
What it does not capture (other tables, TRUNCATE, logical
messages) is logged, counted in `dmb_cdc_skipped_total{reason}` and passed over, never retried.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from ray.util.metrics import Counter, Gauge

from actors.background import BackgroundLoop, LoopingActor, ensure_singleton
from dmb import tracing
from dmb.composition import process_components
from dmb.domain.feed import FeedWriter
from dmb.stores import cdc
from dmb.stores.change_events import CAPTURED_TOPICS, Change
from dmb.stores.kafka import TopicWatch, create_producer, encode, ensure_topics, topic_exists

NAME = "cdc-relay"
log = logging.getLogger("dmb.cdc_relay")


LAG_EVERY_SECONDS = 1.0  # how often the lag gauge is recomputed, stuck or not


# A topic the relay creates on a broker the first time it sees it: a broker without it has
# lost what it held (see _recover_if_the_broker_lost_its_data). Checked every few seconds.
MARKER_TOPIC = "dmb.pipeline.marker"
MARKER_CHECK_SECONDS = 2.0


async def recover_if_the_broker_lost_its_data(bootstrap: str, feed_writer: FeedWriter) -> bool:
    """Before relaying: a broker without our marker topic is new, or lost its data (an
    in-memory broker restarted). Whatever it had acknowledged and not yet delivered is gone,
    and the slot has moved past it, so no replay brings it back: drop the feed caches, which
    rebuild from Postgres on their next read, and only then plant the marker (a crash in
    between repeats the drop, which is harmless). True if it had to.

    The relay runs this at every start; the local launcher also runs it before the system
    takes traffic, so feeds read during start-up are not dropped from under their readers."""
    if await asyncio.to_thread(topic_exists, bootstrap, MARKER_TOPIC):
        return False
    dropped = await feed_writer.forget_all()
    log.warning(
        "the broker has no %s topic: it is new, or it lost its data (an in-memory broker "
        "restarted), and events it acknowledged may be gone; dropped %d feed and author "
        "sets, which rebuild from Postgres on their next read",
        MARKER_TOPIC,
        dropped,
    )
    await asyncio.to_thread(ensure_topics, bootstrap, [MARKER_TOPIC], 1)
    return True


class BrokerLostData(RuntimeError):
    """The broker no longer has the marker topic: the run ends and the next one recovers."""


class CdcRelay(LoopingActor):
    """`bootstrap` replaces the settings' broker address (tests: a broker that is not up yet)."""

    def __init__(
        self, slot: str = cdc.SLOT, idle_wait: float = 0.5, bootstrap: str | None = None
    ) -> None:
        self._settings = process_components().settings
        self._slot = slot
        self._idle_wait = idle_wait  # a read's longest wait for the stream: how soon stop is seen
        self._bootstrap = bootstrap or self._settings.kafka_bootstrap
        self._published = 0
        self._clock = cdc.LagClock(started_at=time.time())
        self._lag = Gauge(
            "dmb_cdc_lag_seconds",
            description="Age of the oldest change not yet relayed (grows while the relay is stuck)",
        )
        self._events = Counter("dmb_cdc_events_total", description="Change events published")
        self._skipped = Counter(
            "dmb_cdc_skipped_total",
            description="WAL messages the relay does not capture (other tables, TRUNCATE, "
            "logical messages), passed over",
            tag_keys=("reason",),
        )
        self._reconnects = Counter(
            "dmb_cdc_relay_failures_total",
            description="Relay runs that failed (Postgres or broker unreachable, slot lost) "
            "and were retried after a backoff",
        )
        self._loop = BackgroundLoop(NAME, self._run, on_failure=lambda _: self._reconnects.inc())
        self._ticker = threading.Thread(target=self._tick_lag, name=f"{NAME}-lag", daemon=True)
        self._ticker.start()

    def _tick_lag(self) -> None:
        """Set the lag gauge every second from the clock, so that it grows while no pass
        succeeds (a gauge set only by successful passes would freeze at its last value)."""
        while not self._loop.stop_requested.wait(LAG_EVERY_SECONDS):
            self._lag.set(self._clock.seconds(time.time()))

    def lag_seconds(self) -> float:
        return self._clock.seconds(time.time())

    async def _run(self, stop: threading.Event) -> None:
        await self._recover_if_the_broker_lost_its_data()
        await asyncio.to_thread(self._relay_forever, stop)

    async def _recover_if_the_broker_lost_its_data(self) -> None:
        assert self._bootstrap is not None
        components = process_components()
        await components.ready()
        await recover_if_the_broker_lost_its_data(self._bootstrap, components.feed_writer)

    def _relay_forever(self, stop: threading.Event) -> None:
        """One run: connect to the broker and the slot, then relay until stopped. Any failure
        (Postgres restarted, broker gone, slot invalidated) ends the run; BackgroundLoop runs it
        again after a backoff, which reconnects both and resumes from the slot's position."""
        assert self._settings.database_url is not None
        assert self._bootstrap is not None
        ensure_topics(self._bootstrap, CAPTURED_TOPICS, self._settings.kafka_topic_partitions)
        producer = create_producer(self._bootstrap)
        watch = TopicWatch(self._bootstrap)
        try:
            reader = cdc.SlotReader(self._settings.database_url.get_secret_value(), self._slot)
            try:
                if reader.ensure_slot():
                    log.warning(
                        "created the missing slot %s: earlier changes were not captured",
                        self._slot,
                    )
                log.info("relaying slot %s to %s", self._slot, self._bootstrap)
                marker_due = time.monotonic() + MARKER_CHECK_SECONDS
                while not stop.is_set():
                    if time.monotonic() >= marker_due:
                        marker_due = time.monotonic() + MARKER_CHECK_SECONDS
                        if not watch.exists(MARKER_TOPIC):
                            raise BrokerLostData(f"{MARKER_TOPIC} is gone from the broker")
                    self._relay_once(reader, producer)
                    self._progressed()
            finally:
                reader.close()
        finally:
            watch.close()
            producer.close(timeout=5)

    def _relay_once(self, reader: cdc.SlotReader, producer: Any) -> None:
        started = time.time()
        batch = reader.read(wait=self._idle_wait)
        for skipped in batch.skipped:
            log.info("skipped a %s message (%s): not captured", skipped.reason, skipped.detail)
            self._skipped.inc(1, tags={"reason": skipped.reason})
        if batch.last_lsn is None:
            self._clock.caught_up(started)
            return
        self._clock.pending(batch.first_commit_ms / 1000)
        spans = [self._publish_span(change, started) for change in batch.changes]
        try:
            futures = [
                producer.send(
                    change.topic,
                    key=encode(change.key),
                    value=encode(change.envelope()),
                    headers=_headers(change, span),
                )
                for change, span in zip(batch.changes, spans, strict=True)
            ]
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=30)  # raises if the broker did not acknowledge
        finally:
            for span in spans:
                span.end()
        reader.advance(batch.last_lsn)  # only after every ack
        self._published += len(futures)
        if futures:
            self._events.inc(len(futures))
        self._clock.relayed(batch.last_commit_ms / 1000)
        self._lag.set(self._clock.seconds(time.time()))

    @staticmethod
    def _publish_span(change: Change, read_at: float) -> tracing.Span:
        """The change's publish, from the send to the broker's ack, in the trace of the request
        that wrote it (its carrier came through the WAL); untraced writes get none."""
        if not change.trace:
            return tracing.INVALID_SPAN
        return tracing.start_span(
            f"cdc publish {change.topic}",
            tracing.PRODUCER,
            {
                "messaging.system": "kafka",
                "messaging.destination.name": change.topic,
                "dmb.cdc.lsn": change.lsn,
                # How long the change waited in the WAL before this pass read it.
                "dmb.cdc.wal_wait_ms": max(0, int(read_at * 1000) - change.commit_ms),
            },
            parent=change.trace,
        )

    def published(self) -> int:
        return self._published


def _headers(change: Change, span: tracing.Span) -> list[tuple[str, bytes]] | None:
    """The record's trace headers: the publish span's context and the writing request's id."""
    if not change.trace:
        return None
    carrier = tracing.outgoing(span)
    if tracing.REQUEST_ID_KEY in change.trace:
        carrier[tracing.REQUEST_ID_KEY] = change.trace[tracing.REQUEST_ID_KEY]
    return tracing.to_headers(carrier)


def start() -> Any:
    """The cluster's one relay, created on first call (idempotent across callers)."""
    return ensure_singleton(CdcRelay, NAME)
