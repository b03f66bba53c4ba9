"""The feed pipeline end to end: WAL -> CDC relay -> Kafka -> consumer -> fan-out pool -> Redis,
and GetHomeFeed merging celebrities, paging and rebuilding from Postgres.

Fan-out only writes into feeds that exist (a missing one is rebuilt from Postgres on its next
read, see dmb.domain.feed), so tests that watch fan-out in Redis first open the reader's feed by
reading it once, as an active user would have.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import psycopg
import pytest
import ray
import redis
from ray import serve

from actors import cdc_relay, feed_consumer
from actors.background import NAMESPACE
from dmb.domain.feed import author_key, feed_key
from dmb.domain.identity import Caller
from dmb.errors import Unauthenticated
from dmb.settings import Settings
from dmb.stores.kafka import create_consumer, decode
from dmb.v1 import feed_pb2, follows_pb2, posts_pb2, users_pb2
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import (
    as_caller,
    eventually,
    follow_in_bulk,
    make_celebrity,
    make_users,
    walk_pages,
)


@pytest.fixture(scope="module")
def handles(serve_system: LocalSystem) -> dict[str, Any]:
    return {
        "posts": serve.get_deployment_handle("PostService", app_name="posts"),
        "follows": serve.get_deployment_handle("FollowService", app_name="follows"),
        "feed": serve.get_deployment_handle("FeedService", app_name="feed"),
    }


@pytest.fixture
def restores_pool(serve_system: LocalSystem, settings: Settings) -> Iterator[None]:
    """For tests that resize the fan-out pool or the consumer group: put both back to the sizes
    the settings give them."""
    yield
    config = {"fanout_workers": settings.fanout_workers, "feed_consumers": settings.feed_consumers}
    serve_system.reconfigure("pipeline", "PipelineSupervisor", config)
    consumer: Any = ray.get_actor(feed_consumer.name_of(0), namespace=NAMESPACE)
    assert ray.get(consumer.resize.remote(settings.fanout_workers)) == settings.fanout_workers


@pytest.fixture(scope="module")
def r(settings: Settings) -> redis.Redis:
    assert settings.redis_url is not None
    return redis.Redis.from_url(settings.redis_url.get_secret_value())


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
    return r.zscore(feed_key(user), str(post)) is not None


def _open(h: dict[str, Any], r: redis.Redis, *users: int) -> None:
    """Read each user's home feed once, so their `feed:<user>` set exists (an active user)."""
    for user in users:
        _feed(h, user)
        assert r.exists(feed_key(user))


def _whole_feed(h: dict[str, Any], user: int, size: int = 50) -> list[int]:
    return walk_pages(lambda cursor: _feed(h, user, size=size, cursor=cursor))


def _reader_of_a_normal_author_and_a_star(
    h: dict[str, Any], r: redis.Redis, database_url: str, settings: Settings
) -> tuple[int, int, int]:
    """(normal, star, reader): the star has enough fans to be a celebrity, the reader follows
    both and has an open feed."""
    normal, star, reader = make_users(database_url, 3)
    make_celebrity(database_url, settings.celebrity_threshold, star)
    _follow(h, reader, normal)
    _follow(h, reader, star)
    _open(h, r, reader)
    return normal, star, reader


def test_fan_out_on_write_reaches_followers_and_delete_removes(
    handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    author, fan1, fan2 = make_users(database_url, 3)
    _follow(handles, fan1, author)
    _follow(handles, fan2, author)
    _open(handles, r, fan1, fan2, author)
    post = _post(handles, author, "fan me out")
    eventually(lambda: _in_feed(r, fan1, post) and _in_feed(r, fan2, post), "fan-out")
    assert [p.id for p in _feed(handles, fan1).posts][:1] == [post]
    assert _feed(handles, fan1).posts[0].author_username.startswith("t_")
    assert not _in_feed(r, author, post)  # not into the author's own feed
    handles["posts"].DeletePost.remote(
        posts_pb2.DeletePostRequest(post_id=post), caller=as_caller(author)
    ).result()
    eventually(lambda: not _in_feed(r, fan1, post), "removal from feeds")
    assert post not in [p.id for p in _feed(handles, fan1).posts]


def test_celebrities_are_read_at_request_time(
    handles: dict[str, Any], r: redis.Redis, database_url: str, settings: Settings
) -> None:
    star, reader = make_users(database_url, 2)
    make_celebrity(database_url, settings.celebrity_threshold, star)
    _follow(handles, reader, star)
    _open(handles, r, reader)
    post = _post(handles, star, "a celebrity speaks")
    eventually(lambda: r.zscore(author_key(star), str(post)) is not None, "author's recent set")
    time.sleep(1)  # give a (wrong) fan-out the chance to happen
    assert not _in_feed(r, reader, post)
    assert post in [p.id for p in _feed(handles, reader).posts]


def test_follow_merges_and_unfollow_removes(
    handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    author, late = make_users(database_url, 2)
    older = [_post(handles, author, f"older {i}") for i in range(3)]
    _open(handles, r, late)
    _follow(handles, late, author)
    eventually(lambda: all(_in_feed(r, late, p) for p in older), "merge on follow")
    handles["follows"].Unfollow.remote(
        follows_pb2.UnfollowRequest(user_id=author), caller=as_caller(late)
    ).result()
    eventually(lambda: not any(_in_feed(r, late, p) for p in older), "removal on unfollow")


def test_paging_merges_without_repeats_and_rebuilds_a_lost_feed(
    handles: dict[str, Any], r: redis.Redis, database_url: str, settings: Settings
) -> None:
    normal, star, reader = _reader_of_a_normal_author_and_a_star(handles, r, database_url, settings)
    made = []
    for i in range(5):
        made.append(_post(handles, normal, f"n{i}"))
        made.append(_post(handles, star, f"s{i}"))
    eventually(
        lambda: (
            all(_in_feed(r, reader, p) for p in made[::2])
            and all(r.zscore(author_key(star), str(p)) is not None for p in made[1::2])
        ),
        "fan-out of normal posts and the celebrity's recent set",
    )

    walked = walk_pages(
        lambda cursor: _feed(handles, reader, size=3, cursor=cursor),
        after_first=lambda: _post(handles, normal, "arrives while paging"),  # must not appear
    )
    assert walked[: len(made)] == sorted(made, reverse=True)
    r.delete(feed_key(reader), author_key(star))  # Redis lost them
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
                    value = decode(message.value)
                    if value["after"] and value["after"]["id"] == post:
                        found = value
                        assert decode(message.key) == {"author_id": author}  # keyed by author
    finally:
        consumer.close()
    assert found["op"] == "c"
    assert found["before"] is None
    assert found["after"]["author_id"] == author
    assert found["source"]["table"] == "posts"
    assert {"lsn", "txId", "ts_ms"} <= found["source"].keys()
    assert "ts_ms" in found


@pytest.mark.usefixtures("restores_pool")
def test_killed_relay_and_worker_lose_nothing(
    handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    author, fan = make_users(database_url, 2)
    _follow(handles, fan, author)
    _open(handles, r, fan)
    relay = ray.get_actor(cdc_relay.NAME, namespace=NAMESPACE)
    ray.kill(relay, no_restart=False)  # Ray restarts it; the slot was not advanced past unsent work
    posts = [_post(handles, author, f"while restarting {i}") for i in range(3)]
    consumer: Any = ray.get_actor(feed_consumer.name_of(0), namespace=NAMESPACE)
    assert ray.get(consumer.resize.remote(2)) == 2  # resize while work flows
    posts.append(_post(handles, author, "after resize"))
    eventually(lambda: all(_in_feed(r, fan, p) for p in posts), "every post delivered")
    for pid in ray.get(consumer.worker_pids.remote()):
        os.kill(pid, signal.SIGKILL)  # Ray restarts the workers and retries their batches
    survivor = _post(handles, author, "after the workers died")
    eventually(lambda: _in_feed(r, fan, survivor), "delivery after worker death")
    assert ray.get(consumer.resize.remote(4)) == 4


@pytest.mark.usefixtures("restores_pool")
def test_operator_resizes_the_pool_by_editing_the_serve_config(
    serve_system: LocalSystem, handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    consumer: Any = ray.get_actor(feed_consumer.name_of(0), namespace=NAMESPACE)
    serve_system.reconfigure("pipeline", "PipelineSupervisor", {"fanout_workers": 3})
    eventually(lambda: ray.get(consumer.stats.remote())["workers"] == 3, "pool resized")
    author, fan = make_users(database_url, 2)
    _follow(handles, fan, author)
    _open(handles, r, fan)
    post = _post(handles, author, "after the operator resized the pool")
    eventually(lambda: _in_feed(r, fan, post), "delivery with the resized pool")


def test_a_fan_out_into_a_lost_feed_does_not_truncate_it(
    handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    author, reader, witness = make_users(database_url, 3)
    _follow(handles, reader, author)
    _follow(handles, witness, author)
    _open(handles, r, reader, witness)
    older = [_post(handles, author, f"before the loss {i}") for i in range(3)]
    eventually(lambda: all(_in_feed(r, reader, p) for p in older), "fan-out")
    r.delete(feed_key(reader))  # evicted
    newer = _post(handles, author, "while the feed is gone")
    # The witness is in the same 100-follower batch: once it has the post, so would the reader.
    eventually(lambda: _in_feed(r, witness, newer), "fan-out of the new post")
    assert not r.exists(feed_key(reader))  # not recreated holding just the new post
    assert [p.id for p in _feed(handles, reader).posts] == [newer, *reversed(older)]


def test_pagination_walks_a_thousand_post_feed_without_gaps_or_repeats(
    handles: dict[str, Any], r: redis.Redis, database_url: str, settings: Settings
) -> None:
    normal, star, reader = _reader_of_a_normal_author_and_a_star(handles, r, database_url, settings)
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO posts (author_id, content) "
            "SELECT CASE WHEN i %% 2 = 0 THEN %s ELSE %s END, 'bulk ' || i "
            "FROM generate_series(1, 1000) AS i RETURNING id, author_id",
            (normal, star),
        ).fetchall()
    made = sorted((int(row[0]) for row in rows), reverse=True)
    by_normal = [int(row[0]) for row in rows if row[1] == normal]
    by_star = [int(row[0]) for row in rows if row[1] == star]
    eventually(  # the two authors' events sit on different partitions: wait for both
        lambda: (
            all(_in_feed(r, reader, p) for p in by_normal)
            and all(r.zscore(author_key(star), str(p)) is not None for p in by_star)
        ),
        "fan-out of 500 posts and the celebrity's 500 in its recent set",
        120,
    )
    seen = walk_pages(
        lambda cursor: _feed(handles, reader, size=37, cursor=cursor),
        after_first=lambda: _post(handles, normal, "newer than the walk: never shown"),
    )
    assert seen == made


def test_random_graph_converges_through_relay_worker_and_consumer_deaths(
    handles: dict[str, Any], r: redis.Redis, database_url: str, settings: Settings
) -> None:
    rng = random.Random(20261201)
    users = make_users(database_url, 24)
    stars = users[:3]
    follows: dict[int, set[int]] = {user: set() for user in users}
    for user in users:
        for other in users:
            wanted = 0.8 if other in stars else 0.12
            if other != user and rng.random() < wanted:
                follows[user].add(other)
    for user, followees in follows.items():
        for followee in followees:
            _follow(handles, user, followee)
    for star in stars:
        make_celebrity(database_url, settings.celebrity_threshold, star)
    _open(handles, r, *users)
    consumer: Any = ray.get_actor(feed_consumer.name_of(0), namespace=NAMESPACE)
    authors_of: dict[int, int] = {}
    for i in range(45):
        author = rng.choice(users)
        authors_of[_post(handles, author, f"graph post {i}")] = author
        if i == 10:
            ray.kill(ray.get_actor(cdc_relay.NAME, namespace=NAMESPACE), no_restart=False)
        if i == 20:
            os.kill(ray.get(consumer.worker_pids.remote())[0], signal.SIGKILL)
        if i == 30:
            ray.kill(consumer, no_restart=False)  # Ray restarts it; uncommitted events replay

    def expected(user: int) -> list[int]:
        return sorted((p for p, a in authors_of.items() if a in follows[user]), reverse=True)

    def converged() -> bool:
        return all(_whole_feed(handles, user) == expected(user) for user in users)

    eventually(converged, "every home feed holds exactly its followees' posts", 180)
    with psycopg.connect(database_url, autocommit=True) as conn:
        celebrities = {
            int(row[0])
            for row in conn.execute(
                "SELECT user_id FROM user_stats WHERE user_id = ANY(%s) AND follower_count >= %s",
                (users, settings.celebrity_threshold),
            )
        }
    assert set(stars) <= celebrities
    for user in users:  # delivered by fan-out, not by a rebuild: the sets stayed in Redis
        fanned = [p for p in expected(user) if authors_of[p] not in celebrities]
        assert all(_in_feed(r, user, p) for p in fanned)
        assert not any(_in_feed(r, user, p) for p in expected(user) if p not in fanned)


def _supervisor_stats() -> dict[str, int]:
    supervisor = serve.get_deployment_handle("PipelineSupervisor", app_name="pipeline")
    stats: dict[str, int] = supervisor.stats.remote().result()
    return stats


def test_an_author_with_hundreds_of_followers_fans_out_in_several_batches(
    handles: dict[str, Any], r: redis.Redis, database_url: str, settings: Settings
) -> None:
    author, *fans = make_users(database_url, 1 + 250)
    follow_in_bulk(database_url, fans, author)
    _open(handles, r, *fans)
    before = _supervisor_stats()["batches"]
    post = _post(handles, author, "to two hundred and fifty")
    eventually(lambda: all(_in_feed(r, fan, post) for fan in fans), "fan-out to every follower")
    batches = -(-len(fans) // settings.fanout_batch_size)  # 3 batches of at most 100
    assert _supervisor_stats()["batches"] - before >= batches


def test_a_feed_is_trimmed_to_its_maximum_length(
    handles: dict[str, Any], r: redis.Redis, database_url: str, settings: Settings
) -> None:
    author, reader = make_users(database_url, 2)
    _follow(handles, reader, author)
    _open(handles, r, reader)
    count = settings.feed_max_length + 50
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO posts (author_id, content) SELECT %s, 'many ' || i "
            "FROM generate_series(1, %s) AS i RETURNING id",
            (author, count),
        ).fetchall()
    newest = sorted((int(row[0]) for row in rows), reverse=True)[: settings.feed_max_length]
    eventually(lambda: _in_feed(r, reader, newest[0]), "fan-out of the newest post", 120)
    members = sorted((int(m) for m in r.zrange(feed_key(reader), 0, -1)), reverse=True)  # type: ignore[arg-type]
    assert len(members) == settings.feed_max_length
    assert members == newest  # the oldest 50 were trimmed away


def test_one_authors_events_stay_on_one_partition(
    handles: dict[str, Any], settings: Settings, database_url: str
) -> None:
    authors = make_users(database_url, 6)
    posts = {_post(handles, author, f"keyed {i}"): author for author in authors for i in range(3)}
    assert settings.kafka_bootstrap is not None
    consumer = create_consumer(
        settings.kafka_bootstrap, f"test-{uuid.uuid4().hex}", ["dmb.public.posts"]
    )
    partition_of: dict[int, set[int]] = {}
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and sum(map(len, partition_of.values())) < len(posts):
            for messages in consumer.poll(timeout_ms=1000).values():
                for message in messages:
                    after = decode(message.value)["after"]
                    if after and after["id"] in posts:
                        partition_of.setdefault(after["author_id"], set()).add(message.partition)
        assert len(consumer.partitions_for_topic("dmb.public.posts")) == (
            settings.kafka_topic_partitions
        )
    finally:
        consumer.close()
    assert set(partition_of) == set(authors)
    assert all(len(partitions) == 1 for partitions in partition_of.values())
    assert len(set().union(*partition_of.values())) > 1  # authors spread over partitions


@pytest.mark.usefixtures("restores_pool")
def test_the_consumer_group_resizes_live_and_a_restarted_consumer_keeps_its_share(
    serve_system: LocalSystem, handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    def configure(workers: int, consumers: int) -> None:
        config = {"fanout_workers": workers, "feed_consumers": consumers}
        serve_system.reconfigure("pipeline", "PipelineSupervisor", config)
        eventually(
            lambda: (
                (_supervisor_stats()["consumers"], _supervisor_stats()["workers"])
                == (consumers, workers)
            ),
            f"{consumers} consumers with {workers} workers",
        )

    configure(6, 2)  # consumer 1 is created with a share of 3
    configure(4, 2)  # and resized to 2 while it runs
    second: Any = ray.get_actor(feed_consumer.name_of(1), namespace=NAMESPACE)
    first_pid = ray.get(second.stats.remote())["pid"]
    ray.kill(second, no_restart=False)  # Ray restarts it with its first arguments (3 workers)
    eventually(lambda: _restarted(second, first_pid), "consumer 1 restarted, with its pool")
    assert ray.get(second.stats.remote())["started_with"] == 2  # the configured share, not 3
    authors = make_users(database_url, 8)
    (fan,) = make_users(database_url, 1)
    for author in authors:  # eight authors: both consumers' partitions carry some
        _follow(handles, fan, author)
    _open(handles, r, fan)
    posts = [_post(handles, author, "two consumers") for author in authors]
    eventually(lambda: all(_in_feed(r, fan, p) for p in posts), "delivery by the group")
    configure(4, 1)  # shrink the group: consumer 1 leaves it
    assert feed_consumer.name_of(1) not in {
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
    }


def _restarted(consumer: Any, old_pid: int) -> bool:
    """True once another process serves the consumer and it has made its pool."""
    try:
        stats = ray.get(consumer.stats.remote(), timeout=5)
    except ray.exceptions.RayError:  # being restarted
        return False
    return bool(stats["pid"] != old_pid and stats["started_with"])


def test_a_feed_has_a_time_to_live_renewed_by_reads_and_is_rebuilt_once_expired(
    handles: dict[str, Any], r: redis.Redis, database_url: str, settings: Settings
) -> None:
    """Issue 12 item 9: under `volatile-lru` a key without a TTL is never evicted, so feeds must
    carry one. Reads renew it, fan-out writes do not, and an expired feed is rebuilt."""
    author, star, reader = make_users(database_url, 3)
    make_celebrity(database_url, settings.celebrity_threshold, star)
    _follow(handles, reader, author)
    _follow(handles, reader, star)
    _open(handles, r, reader)
    ttl = settings.feed_ttl_seconds
    assert ttl - 60 < r.ttl(feed_key(reader)) <= ttl
    assert ttl - 60 < r.ttl(author_key(star)) <= ttl  # the celebrity's set too
    r.expire(feed_key(reader), 120)
    post = _post(handles, author, "fanned out into a feed with a short time left")
    eventually(lambda: _in_feed(r, reader, post), "fan-out")
    assert r.ttl(feed_key(reader)) <= 120  # a write keeps the time left, it does not renew it
    assert [p.id for p in _feed(handles, reader).posts] == [post]
    assert r.ttl(feed_key(reader)) > 120  # the read renewed it
    r.pexpire(feed_key(reader), 1)  # the reader went away long enough for the feed to expire
    eventually(lambda: not r.exists(feed_key(reader)), "the feed expired")
    assert [p.id for p in _feed(handles, reader).posts] == [post]  # rebuilt from Postgres
    assert ttl - 60 < r.ttl(feed_key(reader)) <= ttl


def test_after_flushall_mid_stream_feeds_and_counters_rebuild_and_logout_holds(
    serve_system: LocalSystem, handles: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    """Issue 12 item 6: Redis flushed while posts, likes and comments flow. Afterwards every
    home feed is exactly its followees' posts, every post's counts are the rows' counts, and a
    token logged out before the flush is still refused."""
    rng = random.Random(20261202)
    users = make_users(database_url, 12)
    follows: dict[int, set[int]] = {user: set() for user in users}
    for user in users:
        for other in users:
            if other != user and rng.random() < 0.3:
                follows[user].add(other)
                _follow(handles, user, other)
    _open(handles, r, *users)
    accounts = serve.get_deployment_handle("UserService", app_name="users")
    name = f"f_{uuid.uuid4().hex[:12]}"
    accounts.Register.remote(
        users_pb2.RegisterRequest(username=name, email=f"{name}@example.com", password="pw-12345")
    ).result()
    login = accounts.Login.remote(
        users_pb2.LoginRequest(username=name, password="pw-12345")
    ).result()
    claims = jwt.decode(login.access_token, options={"verify_signature": False})
    leaving = Caller(user_id=login.user_id, jti=claims["jti"], expires_at=claims["exp"])
    accounts.Logout.remote(
        users_pb2.LogoutRequest(refresh_token=login.refresh_token), caller=leaving
    ).result()

    authors_of: dict[int, int] = {}
    for i in range(30):
        author = rng.choice(users)
        post = _post(handles, author, f"flush stream {i}")
        authors_of[post] = author
        for fan in rng.sample(users, 3):
            handles["posts"].LikePost.remote(
                posts_pb2.LikePostRequest(post_id=post), caller=as_caller(fan)
            ).result()
        if i % 4 == 0:
            handles["posts"].AddComment.remote(
                posts_pb2.AddCommentRequest(post_id=post, content=f"comment {i}"),
                caller=as_caller(rng.choice(users)),
            ).result()
        if i == 15:
            r.flushall()  # feeds, recent sets, counters, dirty sets, cached revocations: gone

    def expected(user: int) -> list[int]:
        return sorted((p for p, a in authors_of.items() if a in follows[user]), reverse=True)

    def converged() -> bool:
        return all(_whole_feed(handles, user) == expected(user) for user in users)

    eventually(converged, "every home feed holds exactly its followees' posts", 180)
    with psycopg.connect(database_url) as conn:
        truth = {
            int(row[0]): (int(row[1]), int(row[2]))
            for row in conn.execute(
                "SELECT p.id, (SELECT count(*) FROM likes l WHERE l.post_id = p.id), "
                "(SELECT count(*) FROM comments c WHERE c.post_id = p.id) "
                "FROM posts p WHERE p.id = ANY(%s)",
                (list(authors_of),),
            )
        }
    for post_id in authors_of:
        got = (
            handles["posts"]
            .GetPost.remote(posts_pb2.GetPostRequest(post_id=post_id), caller=as_caller(users[0]))
            .result()
            .post
        )
        assert (got.like_count, got.comment_count) == truth[post_id]
    assert sum(likes for likes, _ in truth.values()) == 3 * len(authors_of)

    with pytest.raises(Unauthenticated, match="revoked"):
        _ = (
            handles["feed"]
            .GetHomeFeed.remote(feed_pb2.GetHomeFeedRequest(), caller=leaving)
            .result()
        )
    with pytest.raises(Unauthenticated):
        accounts.Refresh.remote(
            users_pb2.RefreshRequest(refresh_token=login.refresh_token)
        ).result()
