"""The relay's check for its marker topic (dmb.stores.kafka.TopicWatch): every check asks the
broker afresh, so a topic that appears or vanishes is seen at the next one, and every check
rides one connection, where a new admin client per check (the relay every 2 s, before) connected,
probed the broker's versions and closed each time."""

from __future__ import annotations

import uuid

import psutil

from dmb.settings import Settings
from dmb.stores.kafka import TopicWatch, ensure_topics


def _connections_to(port: int) -> set[int]:
    """Local ports of this process's established connections to the broker."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


def test_a_watch_sees_a_new_topic_at_its_next_check_on_the_same_connection(
    settings: Settings,
) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    topic = f"dmb.test.watch-{uuid.uuid4().hex[:8]}"
    watch = TopicWatch(bootstrap)
    seen: set[int] = set()
    try:
        answers = []
        for check in range(6):
            if check == 3:
                ensure_topics(bootstrap, [topic], 1)
            answers.append(watch.exists(topic))
            seen |= _connections_to(port)
    finally:
        watch.close()
    assert answers == [False, False, False, True, True, True]
    assert len(seen) == 1, seen  # one connection for every check
