"""The dead-letter topic: events the feed consumer could not handle, kept with why and where from.

A record that fails `DMB_FEED_EVENT_MAX_ATTEMPTS` times (bad JSON, an event the code cannot
apply; a store that is down does not count, see TRANSIENT) would otherwise hold its partition
forever: every author keyed to it stops reaching feeds. The consumer instead publishes it here,
with its origin (topic, partition, offset, key), the error and the attempts, waits for the
broker's ack, and moves on.

`dmb dlq list` shows the entries; `dmb dlq replay` publishes each not yet replayed entry's
original key and value back to its original topic (after the cause is fixed) and remembers how
far it got as the committed offset of its own consumer group, so a replay never repeats.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dmb.errors import Unavailable
from dmb.stores.kafka import create_producer, decode, encode, ensure_topics

TOPIC = "dmb.dlq.feed"
REPLAY_GROUP = "dmb-dlq-replay"


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter topic and whether `dmb dlq replay` has sent it back."""

    offset: int
    entry: dict[str, Any]
    replayed: bool

    def original(self) -> tuple[str, bytes | None, bytes | None]:
        """The record as it first arrived: topic, key, value."""
        return (
            str(self.entry["topic"]),
            _bytes(self.entry.get("key_b64")),
            _bytes(self.entry.get("value_b64")),
        )


# A store that is down fails every event alike; that is an outage to wait out (the lag alert
# fires), never a reason to set events aside. Only other errors count towards the limit.
TRANSIENT: tuple[type[BaseException], ...] = (
    Unavailable,
    RedisConnectionError,
    RedisTimeoutError,
    psycopg.OperationalError,
    OSError,
    TimeoutError,
)


def counts_towards_the_limit(
    error: BaseException, transient: tuple[type[BaseException], ...] = ()
) -> bool:
    """Whether a failure may make an event a dead letter (`transient`: more outage types)."""
    return not isinstance(error, TRANSIENT + transient)


def _text(raw: bytes | None) -> str | None:
    return base64.b64encode(raw).decode() if raw is not None else None


def _bytes(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


def entry_of(message: Any, error: BaseException, group: str, attempts: int) -> dict[str, Any]:
    """The dead letter of a consumed record: its origin and bytes (base64, exactly as read, so a
    replay sends the same bytes), a readable preview, and what went wrong."""
    preview = (message.value or b"")[:200].decode("utf-8", "replace")
    return {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key_b64": _text(message.key),
        "value_b64": _text(message.value),
        "value_preview": preview,
        "error": f"{type(error).__name__}: {error}"[:1000],
        "group": group,
        "attempts": attempts,
        "failed_at": time.time(),
    }


class DeadLetterWriter:
    """Publishes dead letters (acks=all) and waits for the broker's ack before returning."""

    def __init__(self, bootstrap: str, partitions: int = 1) -> None:
        ensure_topics(bootstrap, [TOPIC], partitions)
        self._producer = create_producer(bootstrap)

    def publish(self, entry: dict[str, Any]) -> None:
        key = encode([entry["topic"], entry["partition"], entry["offset"]])
        self._producer.send(TOPIC, key=key, value=encode(entry)).get(timeout=30)

    def close(self) -> None:
        self._producer.close()


def _reader(bootstrap: str, group: str | None) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2_000,
    )


def _entries(consumer: KafkaConsumer, start: int) -> Iterator[tuple[int, dict[str, Any]]]:
    partition = TopicPartition(TOPIC, 0)
    end = consumer.end_offsets([partition])[partition]
    if start >= end:
        return
    consumer.seek(partition, start)
    deadline = time.monotonic() + 60  # an empty poll is a slow fetch, not the end: read to `end`
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=2_000)
        for record in batch.get(partition, []):
            yield record.offset, decode(record.value)
            if record.offset + 1 >= end:
                return


def _replayed_up_to(consumer: KafkaConsumer) -> int:
    partition = TopicPartition(TOPIC, 0)
    committed = consumer.committed(partition)
    return int(committed) if committed is not None else 0


def list_dead_letters(bootstrap: str) -> list[DeadLetter]:
    ensure_topics(bootstrap, [TOPIC], 1)
    consumer = _reader(bootstrap, REPLAY_GROUP)
    try:
        partition = TopicPartition(TOPIC, 0)
        consumer.assign([partition])
        replayed = _replayed_up_to(consumer)
        return [
            DeadLetter(offset, entry, offset < replayed) for offset, entry in _entries(consumer, 0)
        ]
    finally:
        consumer.close()


def replay(bootstrap: str) -> list[DeadLetter]:
    """Send every entry not replayed yet back to its original topic; the entries sent."""
    ensure_topics(bootstrap, [TOPIC], 1)
    consumer = _reader(bootstrap, REPLAY_GROUP)
    producer = create_producer(bootstrap)
    sent: list[DeadLetter] = []
    try:
        partition = TopicPartition(TOPIC, 0)
        consumer.assign([partition])
        for offset, entry in _entries(consumer, _replayed_up_to(consumer)):
            letter = DeadLetter(offset, entry, replayed=True)
            topic, key, value = letter.original()
            producer.send(topic, key=key, value=value).get(timeout=30)
            # One entry at a time: a replay cut short resumes after the last one sent.
            consumer.commit({partition: OffsetAndMetadata(offset + 1, "", -1)})
            sent.append(letter)
    finally:
        producer.close()
        consumer.close()
    return sent
