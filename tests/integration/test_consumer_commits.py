"""A consumer commits its offsets paced, not once per poll (actors.change_consumer): under a
steady stream of events one commit a second at most, and the last events are committed as soon
as the stream pauses, so the group's committed offsets still reach everything handled.

Before, every poll that returned records ended in its own commit: one broker round trip per
event at a few dozen writes a second, on the consumer and on the broker."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import ray
from kafka import KafkaConsumer, TopicPartition

from actors import feed_consumer
from actors.background import NAMESPACE
from actors.change_consumer import COMMIT_EVERY_SECONDS
from dmb.localstack.broker import KafkaBroker
from dmb.localstack.process import free_port
from dmb.settings import Settings
from dmb.stores.change_events import CAPTURED_TOPICS
from dmb.stores.kafka import create_producer, encode, ensure_topics
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import eventually

FOLLOWS = "dmb.public.follows"
EVENTS = 20


def _committed_total(bootstrap: str, group: str) -> int:
    reader = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=group)
    try:
        partitions = reader.partitions_for_topic(FOLLOWS) or set()
        return sum(int(reader.committed(TopicPartition(FOLLOWS, p)) or 0) for p in partitions)
    finally:
        reader.close()


def test_a_stream_of_events_is_committed_about_once_a_second_and_fully_when_it_pauses(
    serve_system: LocalSystem, settings: Settings, stack_data_dir: Path
) -> None:
    port = free_port()
    broker = KafkaBroker(stack_data_dir / f"commit-broker-{port}", port)
    broker.start()
    group = f"test-commits-{uuid.uuid4().hex[:8]}"
    consumer_class: Any = ray.remote(feed_consumer.FeedConsumer)
    consumer = consumer_class.options(
        name=f"test-consumer-{group}", namespace=NAMESPACE, num_cpus=0
    ).remote(0, 1, group_id=group, bootstrap=broker.bootstrap)
    producer = None
    try:
        ensure_topics(broker.bootstrap, CAPTURED_TOPICS, settings.kafka_topic_partitions)
        producer = create_producer(broker.bootstrap)
        # An update of a follow row: the feed does not act on it, the consumer still handles
        # (and commits) the record.
        producer.send(FOLLOWS, key=encode({"id": 0}), value=encode({"op": "u"})).get(timeout=30)
        eventually(lambda: ray.get(consumer.stats.remote())["handled"] >= 1, "the first event")
        eventually(lambda: _committed_total(broker.bootstrap, group) >= 1, "its commit")
        before = ray.get(consumer.stats.remote())
        started = time.monotonic()
        for i in range(EVENTS):  # one event every 50 ms: each poll finds about one
            producer.send(FOLLOWS, key=encode({"id": i}), value=encode({"op": "u"}))
            producer.flush(timeout=30)
            time.sleep(0.05)
        eventually(
            lambda: ray.get(consumer.stats.remote())["handled"] >= before["handled"] + EVENTS,
            "every event handled",
        )
        window = time.monotonic() - started
        eventually(
            lambda: _committed_total(broker.bootstrap, group) >= 1 + EVENTS,
            "every handled event committed once the stream paused",
            timeout=30,
        )
        commits = ray.get(consumer.stats.remote())["commits"] - before["commits"]
    finally:
        if producer is not None:
            producer.close()
        ray.kill(consumer, no_restart=True)
        broker.stop()
    # One per COMMIT_EVERY_SECONDS of the stream, and the one when it paused; one per poll
    # would have been about EVENTS.
    assert 1 <= commits <= window / COMMIT_EVERY_SECONDS + 2, (commits, window)


def test_a_commit_refused_by_a_rebalance_does_not_end_the_consumers_run(
    serve_system: LocalSystem, settings: Settings, stack_data_dir: Path
) -> None:
    """A second consumer joins the group while events stream to the first. Commits the broker
    refuses during the rebalance are tried again after the next poll; before, the refusal
    (RebalanceInProgressError) ended the run, and the new Kafka consumer's joining started the
    next rebalance (seen in CI: a resized group that delivered nothing for a minute)."""
    port = free_port()
    broker = KafkaBroker(stack_data_dir / f"rebalance-broker-{port}", port)
    broker.start()
    group = f"test-rebalance-{uuid.uuid4().hex[:8]}"
    consumer_class: Any = ray.remote(feed_consumer.FeedConsumer)
    actors: list[Any] = []
    producer = None
    try:
        ensure_topics(broker.bootstrap, CAPTURED_TOPICS, settings.kafka_topic_partitions)
        producer = create_producer(broker.bootstrap)
        first = consumer_class.options(
            name=f"test-first-{group}", namespace=NAMESPACE, num_cpus=0
        ).remote(0, 1, group_id=group, bootstrap=broker.bootstrap)
        actors.append(first)
        producer.send(FOLLOWS, key=encode({"id": 0}), value=encode({"op": "u"})).get(timeout=30)
        eventually(lambda: ray.get(first.stats.remote())["handled"] >= 1, "the first event")
        second = consumer_class.options(
            name=f"test-second-{group}", namespace=NAMESPACE, num_cpus=0
        ).remote(1, 1, group_id=group, bootstrap=broker.bootstrap)
        actors.append(second)
        sent = 1
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # events all through the join
            producer.send(FOLLOWS, key=encode({"id": sent}), value=encode({"op": "u"}))
            producer.flush(timeout=30)
            sent += 1
            time.sleep(0.05)
        eventually(
            lambda: sum(ray.get(a.stats.remote())["handled"] for a in actors) >= sent,
            "every event handled by the group",
        )
        eventually(
            lambda: _committed_total(broker.bootstrap, group) >= sent,
            "every event committed",
            timeout=60,
        )
        failures = [ray.get(a.loop_failures.remote()) for a in actors]
    finally:
        if producer is not None:
            producer.close()
        for actor in actors:
            ray.kill(actor, no_restart=True)
        broker.stop()
    assert failures == [0, 0]
