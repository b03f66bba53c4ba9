"""The chaos run's bookkeeping (benchmarks/harness/verify.py, faults.py): what counts as lost,
as a wrong feed, and when faults happen. A check that cannot fail proves nothing, so each is
shown failing on the case it exists for."""

from __future__ import annotations

import json
import random

from benchmarks.harness.faults import FAULTS, schedule
from benchmarks.harness.verify import Acknowledged, compare_feeds, differing, missing


def _lines() -> list[str]:
    rows = [
        {"kind": "post", "id": "11", "author": "1"},
        {"kind": "post", "id": "12", "author": "2"},
        {"kind": "follow", "follower": "1", "followee": "2"},
        {"kind": "like", "user": "1", "post": "12"},
        {"kind": "comment", "id": "21", "post": "11"},
    ]
    return [json.dumps(row) for row in rows] + ['{"kind": "post", "id": "1']  # torn last line


def test_acknowledged_writes_are_read_back_and_a_torn_line_is_skipped() -> None:
    found = Acknowledged.parse(_lines())
    assert found.posts == {11: 1, 12: 2}
    assert found.follows == {(1, 2)}
    assert found.likes == {(1, 12)}
    assert found.comments == {21: 11}
    assert found.touched_posts() == {11, 12}


def test_an_acknowledged_write_missing_from_postgres_counts_as_lost() -> None:
    acknowledged = Acknowledged.parse(_lines())
    stored = Acknowledged.parse(_lines())
    assert sum(missing(acknowledged, stored).values()) == 0
    del stored.posts[12]
    stored.likes.clear()
    stored.posts[99] = 3  # a row nobody was told about is not a loss
    assert missing(acknowledged, stored) == {"posts": 1, "follows": 0, "likes": 1, "comments": 0}


def test_a_feed_differs_when_a_post_is_missing_extra_or_out_of_order() -> None:
    expected = {1: [30, 20, 10], 2: [25]}
    assert compare_feeds(expected, {1: [30, 20, 10], 2: [25]}).feeds == 0
    assert compare_feeds(expected, {1: [30, 10], 2: [25]}).as_dict() == {
        "feeds": 1,
        "missing_posts": 1,
        "extra": 0,
    }
    assert compare_feeds(expected, {1: [20, 30, 10], 2: [25, 5]}).as_dict() == {
        "feeds": 2,
        "missing_posts": 0,
        "extra": 1,
    }
    assert compare_feeds(expected, {1: [30, 20, 10]}).feeds == 1  # a feed never read


def test_counts_differ_when_a_post_shows_other_counts_or_none() -> None:
    truth = {1: (2, 1), 2: (0, 0)}
    assert differing(truth, {1: (2, 1), 2: (0, 0)}) == 0
    assert differing(truth, {1: (1, 1), 2: (0, 0)}) == 1
    assert differing(truth, {1: (2, 1)}) == 1


def test_every_fault_is_scheduled_each_round_inside_the_window_and_seeded() -> None:
    plan = schedule(random.Random(3), 100, rounds=2)
    assert sorted(name for _, name in plan) == sorted(FAULTS * 2)
    assert [at for at, _ in plan] == sorted(at for at, _ in plan)
    assert all(10 <= at <= 70 for at, _ in plan)  # load goes on after the last fault
    assert plan == schedule(random.Random(3), 100, rounds=2)
    assert plan != schedule(random.Random(4), 100, rounds=2)
