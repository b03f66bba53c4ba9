"""CDC relay: Postgres logical replication slot -> Kafka, at least once.

Polls the slot with SQL, publishes every captured change as a Debezium-style envelope
(topic dmb.public.<table>, key = primary key), waits until the broker acknowledged all of them
(acks=all, idempotent producer), and only then advances the slot. Killed at any moment, it
publishes again from the last advanced position on restart: duplicates are possible, losses not.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import psycopg
from ray.util.metrics import Counter, Gauge

from actors.background import BackgroundLoop, ensure_singleton
from dmb.settings import load_settings
from dmb.stores import cdc
from dmb.stores.kafka import create_producer, encode

NAME = "cdc-relay"
log = logging.getLogger("dmb.cdc_relay")


class CdcRelay:
    def __init__(self, slot: str = cdc.SLOT, idle_sleep: float = 0.05) -> None:
        self._settings = load_settings()
        self._slot = slot
        self._idle_sleep = idle_sleep
        self._published = 0
        self._lag = Gauge("dmb_cdc_lag_seconds", description="Now minus last relayed commit")
        self._events = Counter("dmb_cdc_events_total", description="Change events published")
        self._slot_ready = threading.Event()
        self._loop = BackgroundLoop(NAME, self._run)

    def wait_ready(self, timeout: float) -> bool:
        """True once the replication slot exists: from then on no committed change is missed."""
        return self._slot_ready.wait(timeout)

    async def _run(self, stop: threading.Event) -> None:
        await asyncio.to_thread(self._relay_forever, stop)

    def _relay_forever(self, stop: threading.Event) -> None:
        assert self._settings.database_url is not None
        assert self._settings.kafka_bootstrap is not None
        producer = create_producer(self._settings.kafka_bootstrap)
        with psycopg.connect(
            self._settings.database_url.get_secret_value(), autocommit=True
        ) as conn:
            cdc.ensure_slot(conn, self._slot)
            self._slot_ready.set()
            while not stop.is_set():
                try:
                    moved = self._relay_once(conn, producer)
                except Exception:
                    log.exception("relay pass failed; retrying from the slot's position")
                    time.sleep(1)
                    continue
                if not moved:
                    time.sleep(self._idle_sleep)
        producer.close()

    def _relay_once(self, conn: psycopg.Connection[Any], producer: Any) -> bool:
        batch = cdc.peek(conn, self._slot)
        if batch.last_lsn is None:
            return False
        futures = [
            producer.send(change.topic, key=encode(change.key), value=encode(change.envelope()))
            for change in batch.changes
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=30)  # raises if the broker did not acknowledge
        cdc.advance(conn, batch.last_lsn, self._slot)  # only after every ack
        self._published += len(futures)
        if futures:
            self._events.inc(len(futures))
        if batch.last_commit_ms:
            self._lag.set(max(0.0, time.time() - batch.last_commit_ms / 1000))
        return True

    def published(self) -> int:
        return self._published


def ensure_running() -> Any:
    return ensure_singleton(CdcRelay, NAME)
