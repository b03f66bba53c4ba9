"""CDC relay: Postgres logical replication slot -> Kafka, at least once.

Polls the slot (wal2json format-version 2, see dmb.stores.cdc), publishes every captured change
as a Debezium-style envelope
(dmb.stores.change_events: topic dmb.public.<table>, key = primary key), waits until the broker
acknowledged all of them (acks=all, idempotent producer), and only then advances the slot.
Killed at any moment, it publishes again from the last advanced position on restart:
duplicates are possible, losses not. What it does not capture (other tables, TRUNCATE, logical
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
from dmb.composition import process_components
from dmb.stores import cdc
from dmb.stores.change_events import FEED_TOPICS
from dmb.stores.kafka import create_producer, encode, ensure_topics

NAME = "cdc-relay"
log = logging.getLogger("dmb.cdc_relay")


class CdcRelay(LoopingActor):
    def __init__(self, slot: str = cdc.SLOT, idle_sleep: float = 0.05) -> None:
        self._settings = process_components().settings
        self._slot = slot
        self._idle_sleep = idle_sleep
        self._published = 0
        self._lag = Gauge("dmb_cdc_lag_seconds", description="Now minus last relayed commit")
        self._events = Counter("dmb_cdc_events_total", description="Change events published")
        self._skipped = Counter(
            "dmb_cdc_skipped_total",
            description="WAL messages the relay does not capture (other tables, TRUNCATE, "
            "logical messages), passed over",
            tag_keys=("reason",),
        )
        self._loop = BackgroundLoop(NAME, self._run)

    async def _run(self, stop: threading.Event) -> None:
        await asyncio.to_thread(self._relay_forever, stop)

    def _relay_forever(self, stop: threading.Event) -> None:
        assert self._settings.database_url is not None
        assert self._settings.kafka_bootstrap is not None
        bootstrap = self._settings.kafka_bootstrap
        ensure_topics(bootstrap, FEED_TOPICS, self._settings.kafka_topic_partitions)
        producer = create_producer(bootstrap)
        reader = cdc.SlotReader(self._settings.database_url.get_secret_value(), self._slot)
        try:
            if reader.ensure_slot():
                log.warning(
                    "created the missing slot %s: earlier changes were not captured", self._slot
                )
            while not stop.is_set():
                try:
                    moved = self._relay_once(reader, producer)
                except Exception:
                    log.exception("relay pass failed; retrying from the slot's position")
                    time.sleep(1)
                    continue
                if not moved:
                    time.sleep(self._idle_sleep)
        finally:
            reader.close()
            producer.close()

    def _relay_once(self, reader: cdc.SlotReader, producer: Any) -> bool:
        batch = reader.peek()
        for skipped in batch.skipped:
            log.info("skipped a %s message (%s): not captured", skipped.reason, skipped.detail)
            self._skipped.inc(1, tags={"reason": skipped.reason})
        if batch.last_lsn is None:
            return False
        futures = [
            producer.send(change.topic, key=encode(change.key), value=encode(change.envelope()))
            for change in batch.changes
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=30)  # raises if the broker did not acknowledge
        reader.advance(batch.last_lsn)  # only after every ack
        self._published += len(futures)
        if futures:
            self._events.inc(len(futures))
        if batch.last_commit_ms:
            self._lag.set(max(0.0, time.time() - batch.last_commit_ms / 1000))
        return True

    def published(self) -> int:
        return self._published


def start() -> Any:
    """The cluster's one relay, created on first call (idempotent across callers)."""
    return ensure_singleton(CdcRelay, NAME)
