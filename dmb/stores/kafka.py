"""Kafka clients (kafka-python) for the CDC relay and the feed consumer; the same code talks to
the local tansu broker and to MSK.

The producer waits for all in-sync replicas (acks=all) and is idempotent where the broker
supports it; the consumer never auto-commits: offsets move only after the work is done.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors
from kafka.admin import NewPartitions, NewTopic
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
        # Fail a start against an absent broker in 10 s rather than 30: the feed consumer's
        # loop then retries with its backoff, and says so in the log, sooner.
        bootstrap_timeout_ms=10_000,
        # A topic that disappears (a broker restarted without its data) and comes back is
        # seen again within seconds, not after the 5-minute default.
        metadata_max_age_ms=5_000,
    )
    return consumer


# A commit refused because the group is rebalancing, or rebalanced since this consumer's last
# poll (its generation or membership is stale). Nothing is lost: the partitions' next owner
# reads from the last commit, which handlers absorb as a replay.
_REBALANCING = (
    kafka_errors.CommitFailedError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
)


def commit(consumer: KafkaConsumer) -> bool:
    """Commit the positions of every record `consumer` has polled. False when a rebalance
    refused it: the caller polls on (which completes the rebalance) and commits later. Other
    failures (the broker gone) are raised."""
    try:
        consumer.commit()
    except _REBALANCING as exc:
        log.info("commit refused during a rebalance (%s); polling on", type(exc).__name__)
        return False
    return True


def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> dict[str, int]:
    """Create the topics with `partitions` partitions each, or grow existing ones to that many
    (never shrink: Kafka cannot). Returns each topic's partition count afterwards.

    Growing moves some keys to another partition: events of one key written before and after
    the change may then be read out of order, once. Grow while the pipeline is drained.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=10_000)
    try:
        existing = set(admin.list_topics())
        brokers = len(admin.describe_cluster().get("brokers", [])) or 1
        missing = [name for name in topics if name not in existing]
        if missing:
            admin.create_topics(
                [NewTopic(name, partitions, min(3, brokers)) for name in missing],
                wait_for_metadata=True,
            )
        counts = _partition_counts(admin, topics)
        grow = {name: NewPartitions(partitions) for name, n in counts.items() if n < partitions}
        if grow:
            try:
                admin.create_partitions(grow)
            except KafkaError as exc:  # e.g. the local broker, which cannot add partitions
                log.warning("could not grow %s to %d partitions: %s", sorted(grow), partitions, exc)
            counts = _partition_counts(admin, topics)
        return counts
    finally:
        admin.close()


class TopicWatch:
    """One admin connection that is asked, again and again, whether topics exist: a fresh
    metadata request each time, without a new client's connect and version probe each time."""

    def __init__(self, bootstrap: str) -> None:
        self._admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","), request_timeout_ms=10_000
        )

    def exists(self, topic: str) -> bool:
        return topic in set(self._admin.list_topics())

    def close(self) -> None:
        self._admin.close()


def topic_exists(bootstrap: str, topic: str) -> bool:
    """Once, on a connection of its own (for repeated checks, keep a TopicWatch)."""
    watch = TopicWatch(bootstrap)
    try:
        return watch.exists(topic)
    finally:
        watch.close()


def _partition_counts(admin: KafkaAdminClient, topics: Sequence[str]) -> dict[str, int]:
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(topics))}


def lag_by_partition(
    end_offsets: dict[tuple[str, int], int], positions: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """Messages not yet consumed, per (topic, partition): end offset minus position (never
    below 0: a position can briefly run ahead of a stale end offset)."""
    return {
        key: max(0, end - positions[key]) for key, end in end_offsets.items() if key in positions
    }


def consumer_lag(consumer: KafkaConsumer, timeout_ms: int = 2_000) -> dict[tuple[str, int], int]:
    """Lag of each partition assigned to `consumer` now. Call it from the thread that polls:
    kafka-python consumers are not thread-safe."""
    assigned = list(consumer.assignment())
    if not assigned:
        return {}
    ends = consumer.end_offsets(assigned, timeout_ms=timeout_ms)
    positions = {}
    for tp in assigned:
        position = consumer.position(tp, timeout_ms=timeout_ms)
        if position is not None:
            positions[(tp.topic, tp.partition)] = position
    return lag_by_partition(
        {(tp.topic, tp.partition): end for tp, end in ends.items() if end is not None}, positions
    )
