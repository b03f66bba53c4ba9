"""The feed pipeline end to end: WAL -> CDC relay -> Kafka -> consumer -> fan-out pool -> Redis,
and GetHomeFeed merging celebrities, paging and rebuilding from Postgres."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import ray
import redis
from ray import serve

from actors import cdc_relay, feed_consumer
from actors.background import NAMESPACE
from dmb.launcher import LocalSystem
from dmb.settings import Settings
from dmb.stores.kafka import create_consumer, decode
from dmb.v1 import feed_pb2, follows_pb2, posts_pb2
from tests.integration.helpers import as_caller, make_users


@pytest.fixture(scope="module")
def handles(serve_system: LocalSystem) -> dict[str, Any]:
    return {
        "posts": serve.get_deployment_handle("PostService", app_name="posts"),
        "follows": serve.get_deployment_handle("FollowService", app_name="follows"),
        "feed": serve.get_deployment_handle("FeedService", app_name="feed"),
    }


@pytest.fixture(scope="module")
def r(settings: Settings) -> redis.Redis:
    assert settings.redis_url is not None
    return redis.Redis.from_url(settings.redis_url.get_secret_value())


def _eventually(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not reached in {timeout}s: {what}")


def _follow(h: dict[str, Any], follower: int, followee: int) -> None:
    h["follows"].Follow.remote(
        follows_pb2.FollowRequest(user_id=followee), caller=as_caller(follower)
    ).result()


def _post(h: dict[str, Any], author: int, text: str = "hello") -> int:
    reply = (
        h["posts"]
        .CreatePost.remote(posts_pb2.CreatePostRequest(content=text), caller=as_caller(author))
        .result()
    )
    return int(reply.post.id)


def _feed(h: dict[str, Any], user: int, size: int = 20, cursor: str = "") -> Any:
    return (
        h["feed"]
        .GetHomeFeed.remote(
            feed_pb2.GetHomeFeedRequest(page_size=size, cursor=cursor), caller=as_caller(user)
        )
        .result()
    )


def _in_feed(r: redis.Redis, user: int, post: int) -> bool:
    return r.zscore(f"feed:{user}", str(post)) is not None


def test_fan_out_on_write_reaches_followers_and_delete_removes(
    handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    author, fan1, fan2 = make_users(database_url, 3)
    _follow(handles, fan1, author)
    _follow(handles, fan2, author)
    post = _post(handles, author, "fan me out")
    _eventually(lambda: _in_feed(r, fan1, post) and _in_feed(r, fan2, post), "fan-out")
    assert [p.id for p in _feed(handles, fan1).posts][:1] == [post]
    assert _feed(handles, fan1).posts[0].author_username.startswith("t_")
    assert not _in_feed(r, author, post)  # not into the author's own feed
    handles["posts"].DeletePost.remote(
        posts_pb2.DeletePostRequest(post_id=post), caller=as_caller(author)
    ).result()
    _eventually(lambda: not _in_feed(r, fan1, post), "removal from feeds")
    assert post not in [p.id for p in _feed(handles, fan1).posts]


def test_celebrities_are_read_at_request_time(
    handles: dict[str, Any], r: redis.Redis, database_url: str, settings: Settings
) -> None:
    star, reader, *fans = make_users(database_url, 2 + settings.celebrity_threshold)
    for fan in [reader, *fans]:
        _follow(handles, fan, star)
    post = _post(handles, star, "a celebrity speaks")
    _eventually(lambda: r.zscore(f"posts:{star}", str(post)) is not None, "author's recent set")
    time.sleep(1)  # give a (wrong) fan-out the chance to happen
    assert not _in_feed(r, reader, post)
    assert post in [p.id for p in _feed(handles, reader).posts]


def test_follow_merges_and_unfollow_removes(
    handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    author, late = make_users(database_url, 2)
    older = [_post(handles, author, f"older {i}") for i in range(3)]
    _follow(handles, late, author)
    _eventually(lambda: all(_in_feed(r, late, p) for p in older), "merge on follow")
    handles["follows"].Unfollow.remote(
        follows_pb2.UnfollowRequest(user_id=author), caller=as_caller(late)
    ).result()
    _eventually(lambda: not any(_in_feed(r, late, p) for p in older), "removal on unfollow")


def test_paging_merges_without_repeats_and_rebuilds_a_lost_feed(
    handles: dict[str, Any], r: redis.Redis, database_url: str, settings: Settings
) -> None:
    normal, star, reader, *fans = make_users(database_url, 3 + settings.celebrity_threshold)
    for fan in fans:
        _follow(handles, fan, star)
    _follow(handles, reader, normal)
    _follow(handles, reader, star)
    made = []
    for i in range(5):
        made.append(_post(handles, normal, f"n{i}"))
        made.append(_post(handles, star, f"s{i}"))
    _eventually(
        lambda: (
            all(_in_feed(r, reader, p) for p in made[::2])
            and all(r.zscore(f"posts:{star}", str(p)) is not None for p in made[1::2])
        ),
        "fan-out of normal posts and the celebrity's recent set",
    )

    def walk() -> list[int]:
        seen, cursor = [], ""
        while True:
            page = _feed(handles, reader, size=3, cursor=cursor)
            seen += [p.id for p in page.posts]
            if len(seen) == 3:
                _post(handles, normal, "arrives while paging")  # newer: must not appear
            if not page.next_cursor:
                return seen
            cursor = page.next_cursor

    assert walk()[: len(made)] == sorted(made, reverse=True)
    r.delete(f"feed:{reader}", f"posts:{star}")  # Redis lost them
    assert [p.id for p in _feed(handles, reader, size=100).posts][-len(made) :] == sorted(
        made, reverse=True
    )


def test_relay_publishes_debezium_envelopes(
    handles: dict[str, Any], settings: Settings, database_url: str
) -> None:
    (author,) = make_users(database_url, 1)
    post = _post(handles, author, "enveloped")
    assert settings.kafka_bootstrap is not None
    consumer = create_consumer(
        settings.kafka_bootstrap, f"test-{uuid.uuid4().hex}", ["dmb.public.posts"]
    )
    found: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not found:
            for messages in consumer.poll(timeout_ms=1000).values():
                for message in messages:
                    if decode(message.key) == {"id": post}:
                        found = decode(message.value)
    finally:
        consumer.close()
    assert found["op"] == "c"
    assert found["before"] is None
    assert found["after"]["author_id"] == author
    assert found["source"]["table"] == "posts"
    assert {"lsn", "txId", "ts_ms"} <= found["source"].keys()
    assert "ts_ms" in found


def test_killed_relay_and_worker_lose_nothing(
    handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    author, fan = make_users(database_url, 2)
    _follow(handles, fan, author)
    relay = ray.get_actor(cdc_relay.NAME, namespace=NAMESPACE)
    ray.kill(relay, no_restart=False)  # Ray restarts it; the slot was not advanced past unsent work
    posts = [_post(handles, author, f"while restarting {i}") for i in range(3)]
    consumer = ray.get_actor(feed_consumer.NAME, namespace=NAMESPACE)
    assert ray.get(consumer.resize.remote(2)) == 2  # resize while work flows
    posts.append(_post(handles, author, "after resize"))
    _eventually(lambda: all(_in_feed(r, fan, p) for p in posts), "every post delivered")
    for pid in ray.get(consumer.worker_pids.remote()):
        os.kill(pid, signal.SIGKILL)  # Ray restarts the workers and retries their batches
    survivor = _post(handles, author, "after the workers died")
    _eventually(lambda: _in_feed(r, fan, survivor), "delivery after worker death")
    assert ray.get(consumer.resize.remote(4)) == 4


def test_operator_resizes_the_pool_by_editing_the_serve_config(
    serve_system: LocalSystem, handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    consumer = ray.get_actor(feed_consumer.NAME, namespace=NAMESPACE)
    serve_system.redeploy(
        {"feed": [{"name": "FanoutSupervisor", "user_config": {"fanout_workers": 3}}]}
    )
    _eventually(lambda: ray.get(consumer.stats.remote())["workers"] == 3, "pool resized")
    author, fan = make_users(database_url, 2)
    _follow(handles, fan, author)
    post = _post(handles, author, "after the operator resized the pool")
    _eventually(lambda: _in_feed(r, fan, post), "delivery with the resized pool")
