"""A consumer commits its offsets paced, not once per poll (actors.change_consumer): under a
steady stream of events one commit a second at most, and the last events are committed as soon
as the stream pauses, so the group's committed offsets still reach everything handled.

Before, every poll that returned records ended in its own commit: one broker round trip per
event at a few dozen writes a second, on the consumer and on the broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
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


class PrivateGroup:
    """A broker of the test's own (no other test's records) and feed consumers in one group on
    it; `send` puts an update of a follow row on the follows topic: the feed does not act on
    it, a consumer still handles and commits the record."""

    def __init__(self, bootstrap: str, producer: Any) -> None:
        self.bootstrap = bootstrap
        self.group = f"test-commits-{uuid.uuid4().hex[:8]}"
        self.consumers: list[Any] = []
        self._producer = producer

    def consumer(self) -> Any:
        consumer_class: Any = ray.remote(feed_consumer.FeedConsumer)
        index = len(self.consumers)
        consumer = consumer_class.options(
            name=f"test-consumer-{self.group}-{index}", namespace=NAMESPACE, num_cpus=0
        ).remote(index, 1, group_id=self.group, bootstrap=self.bootstrap)
        self.consumers.append(consumer)
        return consumer

    def send(self, key: int) -> None:
        self._producer.send(FOLLOWS, key=encode({"id": key}), value=encode({"op": "u"}))
        self._producer.flush(timeout=30)

    def committed(self) -> int:
        """Records committed by the group, in all partitions of the follows topic."""
        return _committed_total(self.bootstrap, self.group)


@pytest.fixture
def private_group(
    serve_system: LocalSystem, settings: Settings, stack_data_dir: Path
) -> Iterator[PrivateGroup]:
    port = free_port()
    broker = KafkaBroker(stack_data_dir / f"commit-broker-{port}", port)
    broker.start()
    producer = None
    group: PrivateGroup | None = None
    try:
        ensure_topics(broker.bootstrap, CAPTURED_TOPICS, settings.kafka_topic_partitions)
        producer = create_producer(broker.bootstrap)
        group = PrivateGroup(broker.bootstrap, producer)
        yield group
    finally:
        if producer is not None:
            producer.close()
        for consumer in group.consumers if group else []:
            ray.kill(consumer, no_restart=True)
        broker.stop()


def test_a_stream_of_events_is_committed_about_once_a_second_and_fully_when_it_pauses(
    private_group: PrivateGroup,
) -> None:
    consumer = private_group.consumer()
    private_group.send(0)
    eventually(lambda: ray.get(consumer.stats.remote())["handled"] >= 1, "the first event")
    eventually(lambda: private_group.committed() >= 1, "its commit")
    before = ray.get(consumer.stats.remote())
    started = time.monotonic()
    for i in range(EVENTS):  # one event every 50 ms: each poll finds about one
        private_group.send(i)
        time.sleep(0.05)
    eventually(
        lambda: ray.get(consumer.stats.remote())["handled"] >= before["handled"] + EVENTS,
        "every event handled",
    )
    window = time.monotonic() - started
    eventually(
        lambda: private_group.committed() >= 1 + EVENTS,
        "every handled event committed once the stream paused",
        timeout=30,
    )
    commits = ray.get(consumer.stats.remote())["commits"] - before["commits"]
    # One per COMMIT_EVERY_SECONDS of the stream, and the one when it paused; one per poll
    # would have been about EVENTS.
    assert 1 <= commits <= window / COMMIT_EVERY_SECONDS + 2, (commits, window)


def test_a_commit_refused_by_a_rebalance_does_not_end_the_consumers_run(
    private_group: PrivateGroup,
) -> None:
    """A second consumer joins the group while events stream to the first. Commits the broker
    refuses during the rebalance are tried again after the next poll; before, the refusal
    (RebalanceInProgressError) ended the run, and the new Kafka consumer's joining started the
    next rebalance (seen in CI: a resized group that delivered nothing for a minute)."""
    first = private_group.consumer()
    private_group.send(0)
    eventually(lambda: ray.get(first.stats.remote())["handled"] >= 1, "the first event")
    private_group.consumer()  # the second joins: a rebalance
    sent = 1
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # events all through the join
        private_group.send(sent)
        sent += 1
        time.sleep(0.05)
    consumers = private_group.consumers
    eventually(
        lambda: sum(ray.get(c.stats.remote())["handled"] for c in consumers) >= sent,
        "every event handled by the group",
    )
    eventually(lambda: private_group.committed() >= sent, "every event committed", timeout=60)
    assert [ray.get(c.loop_failures.remote()) for c in consumers] == [0, 0]
