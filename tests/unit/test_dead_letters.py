"""Which failures may make an event a dead letter, and what a dead letter keeps (pure logic)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import psycopg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from dmb.errors import Unavailable
from dmb.stores.dead_letters import DeadLetter, counts_towards_the_limit, entry_of


@pytest.mark.parametrize(
    "error",
    [Unavailable("redis down"), RedisConnectionError(), psycopg.OperationalError(), TimeoutError()],
)
def test_an_outage_never_counts(error: Exception) -> None:
    assert not counts_towards_the_limit(error)


def test_bad_content_counts_and_extra_outage_types_do_not() -> None:
    assert counts_towards_the_limit(json.JSONDecodeError("x", "doc", 0))
    assert counts_towards_the_limit(KeyError("id"))
    assert not counts_towards_the_limit(KeyError("id"), (KeyError,))


def test_a_dead_letter_keeps_the_exact_bytes_and_where_they_came_from() -> None:
    raw = b"\xff\x00not json"
    message = SimpleNamespace(topic="dmb.public.posts", partition=3, offset=41, key=None, value=raw)
    entry = entry_of(message, ValueError("bad"), "dmb-feed", 5)
    assert (entry["topic"], entry["partition"], entry["offset"]) == ("dmb.public.posts", 3, 41)
    assert entry["error"] == "ValueError: bad"
    assert DeadLetter(0, json.loads(json.dumps(entry)), False).original() == (
        "dmb.public.posts",
        None,
        raw,
    )
