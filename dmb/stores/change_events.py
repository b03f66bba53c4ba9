"""The change events on the CDC topics, both ends in one place.

The relay turns each captured row change into a Debezium-style envelope on topic
`dmb.public.<table>`, keyed by the author the change belongs to: a post by its `author_id`, a
follow by its `followee_id` (whose posts the follow merges), an account deletion (the outbox row
of migration 0006) by its `user_id`; a like, comment or mention (migration 0008) by its
`post_id`. One author's (or post's) events thus stay in order on one partition, and the topics'
partitions spread them over a consumer group. The feed consumer decodes the feed's topics back
into the five small events the feed handles (`decode_event`); the notifications consumer reads
follows, likes, comments and mentions (`decode_notification_event`).
Topic names, keys and the envelope's shape are defined here only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

TOPIC_PREFIX = "dmb.public."
# The logical message a traced write puts into its transaction (dmb.stores.postgres): its
# content is the request's trace carrier, which the relay sends on as Kafka record headers.
TRACE_MESSAGE_PREFIX = "dmb.trace"
FEED_TABLES = ("posts", "follows", "account_deletions")
# What the notifications consumer reads (follows as well): likes, comments and mentions are keyed
# by their post, so one post's likes stay in order on one partition.
NOTIFICATION_TABLES = ("follows", "likes", "comments", "mentions")
CAPTURED_TABLES = (*FEED_TABLES, "likes", "comments", "mentions")
PARTITION_KEYS = {
    "posts": "author_id",
    "follows": "followee_id",
    "account_deletions": "user_id",
    "likes": "post_id",
    "comments": "post_id",
    "mentions": "post_id",
}


def topic_of(table: str) -> str:
    return f"{TOPIC_PREFIX}{table}"


FEED_TOPICS = tuple(topic_of(table) for table in FEED_TABLES)
NOTIFICATION_TOPICS = tuple(topic_of(table) for table in NOTIFICATION_TABLES)
CAPTURED_TOPICS = tuple(topic_of(table) for table in CAPTURED_TABLES)


@dataclass(frozen=True)
class Change:
    """One committed row change as read from the WAL."""

    lsn: str
    xid: int
    schema: str
    table: str
    op: str  # c, u, d
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    commit_ms: int = 0
    trace: dict[str, str] | None = None  # the writing request's carrier (tracing on)

    @property
    def topic(self) -> str:
        return topic_of(self.table)

    @property
    def key(self) -> dict[str, Any]:
        """The record key: the author the change belongs to (see the module docstring)."""
        row = self.after if self.after is not None else self.before
        assert row is not None
        column = PARTITION_KEYS[self.table]
        return {column: row.get(column)}

    def envelope(self, database: str = "dmb") -> dict[str, Any]:
        """The Debezium-style event: before, after, op, source{...}, ts_ms."""
        return {
            "before": self.before,
            "after": self.after,
            "op": self.op,
            "source": {
                "connector": "dmb-cdc",
                "db": database,
                "schema": self.schema,
                "table": self.table,
                "lsn": self.lsn,
                "txId": self.xid,
                "ts_ms": self.commit_ms,
            },
            "ts_ms": int(time.time() * 1000),
        }


@dataclass(frozen=True)
class PostCreated:
    post_id: int
    author_id: int


@dataclass(frozen=True)
class PostDeleted:
    post_id: int
    author_id: int


@dataclass(frozen=True)
class Followed:
    follower_id: int
    followee_id: int


@dataclass(frozen=True)
class Unfollowed:
    follower_id: int
    followee_id: int


@dataclass(frozen=True)
class AccountDeleted:
    """An account is gone: `post_ids` (its newest posts) leave its departed followers' feeds."""

    user_id: int
    post_ids: tuple[int, ...]


FeedEvent = PostCreated | PostDeleted | Followed | Unfollowed | AccountDeleted


@dataclass(frozen=True)
class Liked:
    post_id: int
    user_id: int


@dataclass(frozen=True)
class Unliked:
    post_id: int
    user_id: int


@dataclass(frozen=True)
class Commented:
    comment_id: int
    post_id: int
    author_id: int


@dataclass(frozen=True)
class Mentioned:
    """`mentioned_id` was mentioned by `author_id` in a post (`comment_id` None) or comment."""

    post_id: int
    comment_id: int | None
    author_id: int
    mentioned_id: int


NotificationEvent = Followed | Liked | Unliked | Commented | Mentioned


def int_array(value: Any) -> tuple[int, ...]:
    """A bigint[] column as wal2json sends it (its text form, `{1,2,3}`) or as a JSON array
    (Debezium)."""
    if isinstance(value, list):
        return tuple(int(item) for item in value)
    text = str(value or "").strip("{}")
    return tuple(int(item) for item in text.split(",")) if text else ()


def decode_event(topic: str, envelope: dict[str, Any] | None) -> FeedEvent | None:
    """The domain event an envelope carries; None for changes the feed does not act on
    (updates, other tables, tombstones)."""
    if not envelope:
        return None
    table = topic.removeprefix(TOPIC_PREFIX)
    op = envelope.get("op")
    if table == "posts" and op == "c":
        row = envelope["after"]
        return PostCreated(int(row["id"]), int(row["author_id"]))
    if table == "posts" and op == "d":
        row = envelope["before"]
        return PostDeleted(int(row["id"]), int(row["author_id"]))
    if table == "follows" and op == "c":
        row = envelope["after"]
        return Followed(int(row["follower_id"]), int(row["followee_id"]))
    if table == "follows" and op == "d":
        row = envelope["before"]
        return Unfollowed(int(row["follower_id"]), int(row["followee_id"]))
    if table == "account_deletions" and op == "c":
        row = envelope["after"]
        return AccountDeleted(int(row["user_id"]), int_array(row["post_ids"]))
    return None


def decode_notification_event(
    topic: str, envelope: dict[str, Any] | None
) -> NotificationEvent | None:
    """The event an envelope carries for the notifications consumer; None for the rest."""
    if not envelope:
        return None
    table = topic.removeprefix(TOPIC_PREFIX)
    op = envelope.get("op")
    row = envelope.get("after") if op == "c" else envelope.get("before")
    if row is None:
        return None
    if table == "follows" and op == "c":
        return Followed(int(row["follower_id"]), int(row["followee_id"]))
    if table == "likes" and op == "c":
        return Liked(int(row["post_id"]), int(row["user_id"]))
    if table == "likes" and op == "d":
        return Unliked(int(row["post_id"]), int(row["user_id"]))
    if table == "comments" and op == "c":
        return Commented(int(row["id"]), int(row["post_id"]), int(row["author_id"]))
    if table == "mentions" and op == "c":
        comment = row.get("comment_id")
        return Mentioned(
            int(row["post_id"]),
            None if comment is None else int(comment),
            int(row["author_id"]),
            int(row["mentioned_id"]),
        )
    return None
