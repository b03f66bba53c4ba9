"""A poison event (issue 12 item 3): after DMB_FEED_EVENT_MAX_ATTEMPTS failures the feed
consumer publishes it to the dead-letter topic with its origin and error and its partition moves
on; `dmb dlq list` shows it and `dmb dlq replay` sends the same bytes back, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from kafka import KafkaConsumer, TopicPartition

from actors.feed_consumer import GROUP
from dmb.settings import Settings
from dmb.stores import dead_letters
from dmb.stores.kafka import create_producer, encode
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import eventually

DMB = [sys.executable, "-m", "entrypoints.cli"]
# Follows, not posts: other tests read dmb.public.posts from the start and decode every record.
POSTS = "dmb.public.follows"


def _dlq(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMB_")}
    assert settings.kafka_bootstrap is not None
    env.update(DMB_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, DMB_DATA_DIR=str(settings.data_dir))
    return subprocess.run(
        [*DMB, "dlq", *args], env=env, capture_output=True, text=True, timeout=120, check=True
    )


def _committed(bootstrap: str, partition: int) -> int:
    reader = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=GROUP)
    try:
        return int(reader.committed(TopicPartition(POSTS, partition)) or 0)
    finally:
        reader.close()


def test_a_poison_event_is_dead_lettered_and_its_partition_moves_on(
    serve_system: LocalSystem, settings: Settings
) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    poison = b'{"not json ' + uuid.uuid4().hex.encode()
    producer = create_producer(bootstrap)
    sent = producer.send(POSTS, key=encode({"followee_id": 1}), value=poison).get(timeout=30)
    producer.close()

    def ours() -> dead_letters.DeadLetter | None:
        """The feed consumer's dead letter of the poison (the notifications consumer reads the
        follows topic too, and dead-letters it under its own group)."""
        for letter in dead_letters.list_dead_letters(bootstrap):
            if letter.original()[2] == poison and letter.entry["group"] == GROUP:
                return letter
        return None

    letter = eventually(ours, "the poison event in the dead-letter topic", timeout=120, every=1)
    entry = letter.entry
    assert (entry["topic"], entry["partition"], entry["offset"]) == (
        POSTS,
        sent.partition,
        sent.offset,
    )
    assert entry["attempts"] == settings.feed_event_max_attempts
    assert "JSONDecodeError" in entry["error"]
    assert entry["group"] == GROUP
    eventually(
        lambda: _committed(bootstrap, sent.partition) > sent.offset,
        "the consumer group past the poison event",
        timeout=120,
        every=1,
    )

    listed = json.loads(_dlq(settings, "list", "--json").stdout)
    mine = [x for x in listed if x["dlq_offset"] == letter.offset]
    assert [x["replayed"] for x in mine] == [False]
    ends_before = _end_offsets(bootstrap)
    replayed = _dlq(settings, "replay").stdout
    assert f"replayed {letter.offset}:" in replayed
    again = [
        x
        for x in json.loads(_dlq(settings, "list", "--json").stdout)
        if x["dlq_offset"] == letter.offset
    ]
    assert again[0]["replayed"] is True
    assert f"replayed {letter.offset}:" not in _dlq(settings, "replay").stdout  # never twice
    back = _records_since(bootstrap, ends_before)
    assert poison in back  # the same bytes, back in the original topic


def _end_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    reader = KafkaConsumer(bootstrap_servers=bootstrap.split(","))
    try:
        partitions = [TopicPartition(POSTS, p) for p in reader.partitions_for_topic(POSTS) or []]
        return dict(reader.end_offsets(partitions))
    finally:
        reader.close()


def _records_since(bootstrap: str, starts: dict[TopicPartition, int]) -> list[bytes]:
    reader = KafkaConsumer(bootstrap_servers=bootstrap.split(","), consumer_timeout_ms=3_000)
    try:
        reader.assign(list(starts))
        for partition, offset in starts.items():
            reader.seek(partition, offset)
        return [record.value for record in reader]
    finally:
        reader.close()
