"""Kafka clients (kafka-python) for the CDC relay and the feed consumer; the same code talks to
the local tansu broker and to MSK.

The producer waits for all in-sync replicas (acks=all) and is idempotent where the broker
supports it; the consumer never auto-commits: offsets move only after the work is done.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

log = logging.getLogger("dmb.kafka")


def encode(value: Any) -> bytes:
    """Canonical JSON bytes for keys and values (the same key always hashes the same)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def decode(raw: bytes | None) -> Any:
    return json.loads(raw) if raw else None


def create_producer(bootstrap: str) -> KafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap.split(","),
        "acks": "all",
        "linger_ms": 5,
        "retries": 5,
        "request_timeout_ms": 10_000,
        "max_in_flight_requests_per_connection": 1,  # keeps per-key order across retries
    }
    try:
        return KafkaProducer(enable_idempotence=True, **options)
    except (KafkaError, ValueError, TypeError) as exc:  # broker or client without idempotence
        log.warning("idempotent producer unavailable (%s); using acks=all without it", exc)
        return KafkaProducer(**options)


def create_consumer(bootstrap: str, group_id: str, topics: list[str]) -> KafkaConsumer:
    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap.split(","),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        max_poll_records=200,
    )
    return consumer
