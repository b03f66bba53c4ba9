"""Mention parsing and the notification events' decoding: pure functions."""

from __future__ import annotations

from typing import Any

from dmb.domain.mentions import MAX_MENTIONS, mentioned_usernames
from dmb.stores.change_events import (
    Commented,
    Followed,
    Liked,
    Mentioned,
    Unliked,
    decode_notification_event,
    topic_of,
)


def test_mentions_are_found_lower_cased_once_each_in_order() -> None:
    text = "hi @Bob and @alice_1, again @bob! (@carol)"
    assert mentioned_usernames(text) == ["bob", "alice_1", "carol"]


def test_what_is_not_a_mention() -> None:
    assert mentioned_usernames("mail me@example.com") == []
    assert mentioned_usernames("@ab is too short") == []
    assert mentioned_usernames("@" + "a" * 33) == []  # too long: not cut down to 32
    assert mentioned_usernames("@@bob or bob@ or @bob@host") == []
    assert mentioned_usernames("@bob's post, @dave.") == ["bob", "dave"]
    assert mentioned_usernames("@ünïcode @naïve") == []


def test_mentions_are_capped() -> None:
    text = " ".join(f"@user{i:02d}" for i in range(MAX_MENTIONS + 5))
    assert mentioned_usernames(text) == [f"user{i:02d}" for i in range(MAX_MENTIONS)]


def _envelope(op: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"op": op, "after": row if op == "c" else None, "before": row if op == "d" else None}


def test_notification_events_decode() -> None:
    decode = decode_notification_event
    assert decode(topic_of("follows"), _envelope("c", {"follower_id": 1, "followee_id": 2})) == (
        Followed(1, 2)
    )
    assert decode(topic_of("follows"), _envelope("d", {"follower_id": 1, "followee_id": 2})) is None
    assert decode(topic_of("likes"), _envelope("c", {"post_id": 5, "user_id": 1})) == Liked(5, 1)
    assert decode(topic_of("likes"), _envelope("d", {"post_id": 5, "user_id": 1})) == Unliked(5, 1)
    comment = {"id": 9, "post_id": 5, "author_id": 3, "content": "x"}
    assert decode(topic_of("comments"), _envelope("c", comment)) == Commented(9, 5, 3)
    assert decode(topic_of("comments"), _envelope("d", comment)) is None
    mention = {"id": 1, "post_id": 5, "comment_id": None, "author_id": 3, "mentioned_id": 4}
    assert decode(topic_of("mentions"), _envelope("c", mention)) == Mentioned(5, None, 3, 4)
    in_comment = {**mention, "comment_id": 9}
    assert decode(topic_of("mentions"), _envelope("c", in_comment)) == Mentioned(5, 9, 3, 4)
    assert decode(topic_of("posts"), _envelope("c", {"id": 1, "author_id": 2})) is None
    assert decode(topic_of("likes"), None) is None
