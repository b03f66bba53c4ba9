"""The CDC relay against the real stack: content cannot confuse the decoder (wal2json v2), and
what the relay does not capture (other tables, TRUNCATE, logical messages) is passed over, never
a stall. Each of these stalled or broke the relay when it parsed test_decoding's text."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from ray import serve

from dmb.settings import Settings
from dmb.stores.kafka import create_consumer, decode
from dmb.v1 import posts_pb2
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import as_caller, eventually, make_users


class PostsTopic:
    """Reads dmb.public.posts from the start and keeps every event by post id."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = create_consumer(
            bootstrap, f"test-{uuid.uuid4().hex}", ["dmb.public.posts"]
        )
        self.events: dict[int, list[dict[str, Any]]] = {}

    def wait_for(self, post: int, op: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events.get(post, []):
                if event["op"] == op:
                    return event
            for messages in self._consumer.poll(timeout_ms=500).values():
                for message in messages:
                    value = decode(message.value)
                    row = value["after"] or value["before"]
                    self.events.setdefault(int(row["id"]), []).append(value)
        raise AssertionError(f"no {op!r} event for post {post} in {timeout}s")

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture(scope="module")
def topic(serve_system: LocalSystem, settings: Settings) -> Iterator[PostsTopic]:
    assert settings.kafka_bootstrap is not None
    watcher = PostsTopic(settings.kafka_bootstrap)
    yield watcher
    watcher.close()


@pytest.fixture(scope="module")
def posts(serve_system: LocalSystem) -> Any:
    return serve.get_deployment_handle("PostService", app_name="posts")


def _post(posts: Any, author: int, text: str) -> int:
    request = posts_pb2.CreatePostRequest(content=text)
    return int(posts.CreatePost.remote(request, caller=as_caller(author)).result().post.id)


def _stored(database_url: str, post: int) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT content FROM posts WHERE id = %s", (post,)).fetchone()
    assert row is not None
    return str(row[0])


def test_update_of_a_post_whose_old_content_holds_decoder_keywords_is_relayed_intact(
    posts: Any, topic: PostsTopic, database_url: str
) -> None:
    (author,) = make_users(database_url, 1)
    old = "before old-key: x[text]:'y' new-tuple: id[bigint]:1 content[text]:'z'"
    post = _post(posts, author, old)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE posts SET content = %s WHERE id = %s", ("after new-tuple:", post))
    event = topic.wait_for(post, "u")
    assert event["before"]["content"] == old
    assert event["after"]["content"] == "after new-tuple:"


def test_truncate_and_a_logical_message_do_not_stall_the_relay(
    posts: Any, topic: PostsTopic, database_url: str
) -> None:
    (author,) = make_users(database_url, 1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS cdc_scratch (id int)")
        conn.execute("INSERT INTO cdc_scratch VALUES (1)")
        conn.execute("TRUNCATE cdc_scratch")
        conn.execute("SELECT pg_logical_emit_message(true, 'x', 'y')")
        conn.execute("SELECT pg_logical_emit_message(false, 'x', 'y')")
    post = _post(posts, author, "after a truncate and two messages")
    assert topic.wait_for(post, "c")["after"]["content"] == "after a truncate and two messages"


_KEYWORDS = st.sampled_from(
    [
        "new-tuple:",
        "old-key:",
        "table public.posts: INSERT:",
        "COMMIT 1",
        "'",
        "''",
        '"',
        "\\",
        "\n",
    ]
)
_CONTENT = st.lists(
    st.one_of(_KEYWORDS, st.text(st.characters(codec="utf-8", exclude_characters="\x00"))),
    max_size=6,
).map(lambda parts: "p" + "".join(parts)[:1990])


@hsettings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=_CONTENT)
def test_arbitrary_unicode_content_arrives_intact(
    posts: Any, topic: PostsTopic, database_url: str, content: str
) -> None:
    (author,) = make_users(database_url, 1)
    post = _post(posts, author, content)
    posts.AddComment.remote(
        posts_pb2.AddCommentRequest(post_id=post, content=content), caller=as_caller(author)
    ).result()  # comments are not captured: a skipped change, not a stall
    event = topic.wait_for(post, "c")
    assert event["after"]["content"] == _stored(database_url, post)


def test_the_relay_streams_the_slot_instead_of_polling_it(
    serve_system: LocalSystem, database_url: str
) -> None:
    """The slot is held by a walsender (a replication-protocol stream). Polling with SQL held
    it only during each call, from an ordinary backend, and decoded the WAL again each time."""

    def streamed_by_a_walsender() -> bool:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_replication_slots s "
                "JOIN pg_stat_replication r ON r.pid = s.active_pid "
                "WHERE s.slot_name = 'dmb_cdc'"
            ).fetchone()
        return row is not None and row[0] == 1

    eventually(streamed_by_a_walsender, "a walsender streaming the slot dmb_cdc")
