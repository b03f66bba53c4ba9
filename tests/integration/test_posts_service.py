"""PostService through the deployed Serve app (handle and gRPC), counters and replica reads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import psycopg
import pytest
import redis
from ray import serve

from dmb.domain.counters import Counters, counts_key
from dmb.domain.paging import Page
from dmb.domain.posts import Posts
from dmb.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from dmb.settings import Settings
from dmb.stores import read_your_writes
from dmb.stores.postgres import Database
from dmb.stores.read_your_writes import WritePosition
from dmb.stores.redis import create_redis
from dmb.v1 import posts_pb2 as pb
from dmb.v1 import posts_pb2_grpc
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import as_caller, eventually, grpc_metadata, make_users, walk_pages


@pytest.fixture(scope="module")
def posts(serve_system: LocalSystem) -> Any:
    return serve.get_deployment_handle("PostService", app_name="posts")


def _create(posts: Any, author: int, content: str = "hello world") -> Any:
    return (
        posts.CreatePost.remote(pb.CreatePostRequest(content=content), caller=as_caller(author))
        .result()
        .post
    )


def _stored_counts(database_url: str, post_id: int) -> tuple[int, int] | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT like_count, comment_count FROM posts WHERE id = %s", (post_id,)
        ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def test_create_trims_and_get_reads_it_back(posts: Any, database_url: str) -> None:
    (author,) = make_users(database_url, 1)
    post = _create(posts, author, "   hello there   ")
    assert post.content == "hello there"
    assert post.author_id == author
    got = posts.GetPost.remote(
        pb.GetPostRequest(post_id=post.id), caller=as_caller(author)
    ).result()
    assert got.post.content == "hello there"
    assert (got.post.like_count, got.post.comment_count) == (0, 0)


@pytest.mark.parametrize("content", ["", "    ", "x" * 2001])
def test_bad_content_is_refused_and_nothing_is_written(
    posts: Any, database_url: str, content: str
) -> None:
    (author,) = make_users(database_url, 1)
    with pytest.raises(InvalidArgument, match="content"):
        _create(posts, author, content)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM posts WHERE author_id = %s", (author,)).fetchone()
    assert row == (0,)


def test_exactly_2000_characters_is_accepted(posts: Any, database_url: str) -> None:
    (author,) = make_users(database_url, 1)
    assert len(_create(posts, author, "é" * 2000).content) == 2000


def test_only_the_author_deletes(posts: Any, database_url: str) -> None:
    author, other = make_users(database_url, 2)
    post = _create(posts, author)
    with pytest.raises(PermissionDenied):
        posts.DeletePost.remote(
            pb.DeletePostRequest(post_id=post.id), caller=as_caller(other)
        ).result()
    posts.DeletePost.remote(
        pb.DeletePostRequest(post_id=post.id), caller=as_caller(author)
    ).result()
    with pytest.raises(NotFound):
        posts.GetPost.remote(pb.GetPostRequest(post_id=post.id), caller=as_caller(author)).result()


def test_user_posts_page_newest_first_without_repeats(posts: Any, database_url: str) -> None:
    (author,) = make_users(database_url, 1)
    made = [_create(posts, author, f"post {i}").id for i in range(7)]
    seen = walk_pages(
        lambda cursor: posts.ListUserPosts.remote(
            pb.ListUserPostsRequest(user_id=author, page_size=3, cursor=cursor),
            caller=as_caller(author),
        ).result(),
        after_first=lambda: _create(posts, author, "arrived while paging"),
    )
    assert seen == sorted(made, reverse=True)


def test_likes_are_idempotent_and_counted(posts: Any, database_url: str) -> None:
    author, fan, other = make_users(database_url, 3)
    post = _create(posts, author)
    like = pb.LikePostRequest(post_id=post.id)
    assert posts.LikePost.remote(like, caller=as_caller(fan)).result().like_count == 1
    assert posts.LikePost.remote(like, caller=as_caller(fan)).result().like_count == 1
    assert posts.LikePost.remote(like, caller=as_caller(other)).result().like_count == 2
    unlike = pb.UnlikePostRequest(post_id=post.id)
    assert posts.UnlikePost.remote(unlike, caller=as_caller(fan)).result().like_count == 1
    assert posts.UnlikePost.remote(unlike, caller=as_caller(fan)).result().like_count == 1
    with pytest.raises(NotFound):
        posts.LikePost.remote(pb.LikePostRequest(post_id=1), caller=as_caller(fan)).result()
    eventually(lambda: _stored_counts(database_url, post.id) == (1, 0), "the like flushed", 30)


def test_comments_page_and_delete_permissions(posts: Any, database_url: str) -> None:
    author, commenter, stranger = make_users(database_url, 3)
    post = _create(posts, author)
    comments = [
        posts.AddComment.remote(
            pb.AddCommentRequest(post_id=post.id, content=f"c{i}"), caller=as_caller(commenter)
        )
        .result()
        .comment
        for i in range(3)
    ]
    first = posts.ListComments.remote(  # as the writer: the replica has caught up for them
        pb.ListCommentsRequest(post_id=post.id, page_size=2), caller=as_caller(commenter)
    ).result()
    rest = posts.ListComments.remote(
        pb.ListCommentsRequest(post_id=post.id, page_size=2, cursor=first.next_cursor),
        caller=as_caller(commenter),
    ).result()
    assert [c.id for c in [*first.comments, *rest.comments]] == [c.id for c in comments]
    assert rest.next_cursor == ""
    delete = pb.DeleteCommentRequest(post_id=post.id, comment_id=comments[0].id)
    with pytest.raises(PermissionDenied):
        posts.DeleteComment.remote(delete, caller=as_caller(stranger)).result()
    posts.DeleteComment.remote(delete, caller=as_caller(author)).result()  # post author may
    posts.DeleteComment.remote(
        pb.DeleteCommentRequest(post_id=post.id, comment_id=comments[1].id),
        caller=as_caller(commenter),
    ).result()
    got = posts.GetPost.remote(
        pb.GetPostRequest(post_id=post.id), caller=as_caller(author)
    ).result()
    assert got.post.comment_count == 1
    with pytest.raises(InvalidArgument):
        posts.AddComment.remote(
            pb.AddCommentRequest(post_id=post.id, content=" "), caller=as_caller(author)
        ).result()
    eventually(lambda: _stored_counts(database_url, post.id) == (0, 1), "the comment flushed", 30)


def test_lost_counters_are_rebuilt_from_postgres(
    posts: Any, database_url: str, redis_url: str
) -> None:
    author, *fans = make_users(database_url, 4)
    post = _create(posts, author)
    for fan in fans:
        posts.LikePost.remote(pb.LikePostRequest(post_id=post.id), caller=as_caller(fan)).result()
    redis.Redis.from_url(redis_url).delete(counts_key(post.id))
    got = posts.GetPost.remote(
        pb.GetPostRequest(post_id=post.id), caller=as_caller(author)
    ).result()
    assert got.post.like_count == 3


def test_a_flush_that_fails_keeps_its_work(settings: Settings, database_url: str) -> None:
    """Dirty ids survive in the flushing set when Postgres fails mid-flush."""
    (author,) = make_users(database_url, 1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO posts (author_id, content) VALUES (%s, 'x') RETURNING id", (author,)
        ).fetchone()
        assert row is not None
        post_id = int(row[0])
        conn.execute("INSERT INTO likes (post_id, user_id) VALUES (%s, %s)", (post_id, author))

    # Keys of this test's own, so the cluster's live flusher does not take the work first.
    tag = uuid.uuid4().hex
    dirty, flushing = f"dmb:{{t{tag}}}:dirty", f"dmb:{{t{tag}}}:flushing"

    async def scenario() -> tuple[bool, tuple[int, int] | None]:
        client = create_redis(settings)
        broken = Database(
            settings.with_overrides(
                {"database_url": "postgresql://x@127.0.0.1:1/x", "store_timeout_seconds": 1}
            )
        )
        await broken.open()
        await client.sadd(dirty, str(post_id))
        with pytest.raises(Unavailable):
            await Counters(broken, client, dirty, flushing).flush()
        await broken.close()
        kept = bool(await client.sismember(flushing, str(post_id)))
        healthy = Database(settings, client)
        await healthy.open()
        try:
            await Counters(healthy, client, dirty, flushing).flush()
        finally:
            await healthy.close()
            await client.aclose()
        return kept, _stored_counts(database_url, post_id)

    kept, stored = asyncio.run(scenario())
    assert kept
    assert stored == (1, 0)


def test_a_flush_after_redis_lost_its_data_recounts_the_posts_that_lost_their_mark(
    settings: Settings, database_url: str
) -> None:
    """Found by the chaos run (benchmarks/chaos.py): a like committed shortly before Redis
    restarted empty lost its dirty mark with it, and the post's like_count column stayed stale
    until its next like. The flusher now finds its marker key gone and recounts every post."""
    (author,) = make_users(database_url, 1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO posts (author_id, content) VALUES (%s, 'x') RETURNING id", (author,)
        ).fetchone()
        assert row is not None
        post_id = int(row[0])
    fans = make_users(database_url, 2)

    def like_without_a_mark(fan: int) -> None:  # the mark was in the Redis that was lost
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO likes (post_id, user_id) VALUES (%s, %s)", (post_id, fan))

    tag = uuid.uuid4().hex  # keys of this test's own, away from the cluster's live flusher
    dirty, flushing, alive = (f"dmb:{{t{tag}}}:{name}" for name in ("dirty", "flushing", "alive"))

    async def scenario() -> list[tuple[int, int] | None]:
        client = create_redis(settings)
        db = Database(settings, client)
        await db.open()
        counters = Counters(db, client, dirty, flushing, alive)
        seen = []
        try:
            like_without_a_mark(fans[0])
            await counters.flush()  # no marker: this Redis lost its data
            seen.append(_stored_counts(database_url, post_id))
            like_without_a_mark(fans[1])
            await counters.flush()  # marker there: only marked posts are written
            seen.append(_stored_counts(database_url, post_id))
            await client.delete(alive)  # lost again
            await counters.flush()
            seen.append(_stored_counts(database_url, post_id))
        finally:
            await db.close()
            await client.delete(dirty, flushing, alive)
            await client.aclose()
        return seen

    assert asyncio.run(scenario()) == [(1, 0), (1, 0), (2, 0)]


def test_author_reads_their_write_on_the_replica_path(posts: Any, database_url: str) -> None:
    (author,) = make_users(database_url, 1)
    for i in range(5):
        post = _create(posts, author, f"fresh {i}")
        listed = posts.ListUserPosts.remote(
            pb.ListUserPostsRequest(user_id=author, page_size=1), caller=as_caller(author)
        ).result()
        assert listed.posts[0].id == post.id


def test_batch_get_keeps_order_and_skips_missing(posts: Any, database_url: str) -> None:
    (author,) = make_users(database_url, 1)
    a, b = _create(posts, author, "a").id, _create(posts, author, "b").id
    got = posts.GetPosts.remote(
        pb.GetPostsRequest(post_ids=[b, 1, a]), caller=as_caller(author)
    ).result()
    assert [p.id for p in got.posts] == [b, a]
    assert got.posts[0].author_username.startswith("t_")


def test_grpc_ingress_serves_posts_with_the_jwt(
    grpc_channel: grpc.Channel, issue_token: Callable[[int], str], database_url: str
) -> None:
    author, other = make_users(database_url, 2)
    stub = posts_pb2_grpc.PostServiceStub(grpc_channel)
    created = stub.CreatePost(
        pb.CreatePostRequest(content="via grpc"),
        metadata=grpc_metadata("posts", issue_token(author)),
    )
    with pytest.raises(grpc.RpcError) as denied:
        stub.DeletePost(
            pb.DeletePostRequest(post_id=created.post.id),
            metadata=grpc_metadata("posts", issue_token(other)),
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as bad:
        stub.CreatePost(
            pb.CreatePostRequest(content=""), metadata=grpc_metadata("posts", issue_token(author))
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_rebuilt_count_includes_the_write_that_triggered_it_while_the_replica_lags(
    posts: Any, database_url: str, redis_url: str, settings: Settings
) -> None:
    """A missing counter hash is rebuilt right after a committed like: from a replica that has
    not replayed that like yet, the reply (and the cached hash) would say one like too few."""
    author, fan = make_users(database_url, 2)
    post = _create(posts, author)
    assert settings.database_replica_url is not None
    replica = settings.database_replica_url.get_secret_value()
    with psycopg.connect(replica, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            redis.Redis.from_url(redis_url).delete(counts_key(post.id))
            liked = posts.LikePost.remote(
                pb.LikePostRequest(post_id=post.id), caller=as_caller(fan)
            ).result()
            cached = posts.GetPost.remote(
                pb.GetPostRequest(post_id=post.id), caller=as_caller(author)
            ).result()
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")
    assert liked.like_count == 1
    assert cached.post.like_count == 1


def test_concurrent_gets_share_one_query_and_each_gets_its_own_answer(
    settings: Settings, database_url: str
) -> None:
    """What a coalesced Batch of GetPost does: many gets at once (each with its caller's write
    position known, as the RPC boundary declares it), one `= ANY` read per pool (the first two
    go alone, the rest wait for them and leave together), each caller its post or NotFound."""
    (author,) = make_users(database_url, 1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        ids = [
            int(row[0])
            for row in conn.execute(
                "INSERT INTO posts (author_id, content) "
                "SELECT %s, 'post ' || n FROM generate_series(1, 24) n RETURNING id",
                (author,),
            ).fetchall()
        ]

    async def get(posts: Posts, user_id: int, post_id: int) -> Any:
        with read_your_writes.known(WritePosition(user_id, None)):
            return await posts.get(as_caller(user_id), post_id)

    async def scenario() -> tuple[list[Any], int]:
        client = create_redis(settings)
        db = Database(settings, client)
        await db.open()
        posts = Posts(db, Counters(db, client))
        reads = 0
        hydrate = posts.hydrate

        async def counted(conn: Any, post_ids: Any) -> Any:
            nonlocal reads
            reads += 1
            return await hydrate(conn, post_ids)

        posts.hydrate = counted  # type: ignore[method-assign]  # a spy: the real read runs
        try:
            wanted = [*ids, 999_999_999_999, ids[0]]
            got = await asyncio.gather(
                *(get(posts, author + 1 + i, post_id) for i, post_id in enumerate(wanted)),
                return_exceptions=True,
            )
        finally:
            await db.close()
            await client.aclose()
        return got, reads

    got, reads = asyncio.run(scenario())
    assert [post.content for post in got[:24]] == [f"post {n}" for n in range(1, 25)]
    assert [post.id for post in got[:24]] == ids
    assert isinstance(got[24], NotFound)
    assert got[25].id == ids[0]
    assert reads == 3  # 26 gets, 2 in flight at most: two alone, then the other 24 at once


def test_concurrent_timeline_pages_share_one_query_and_each_gets_its_own_page(
    settings: Settings, database_url: str
) -> None:
    """What a coalesced Batch of ListUserPosts does: many authors' pages at once, each below its
    own cursor, one author asked twice, one with no posts, one that does not exist. Each gets
    the page it gets alone; the batch takes one connection for many pages."""
    busy, quiet, empty = make_users(database_url, 3)
    with psycopg.connect(database_url, autocommit=True) as conn:
        made = {
            author: [
                int(row[0])
                for row in conn.execute(
                    "INSERT INTO posts (author_id, content) "
                    "SELECT %s, 'post ' || n FROM generate_series(1, %s) n RETURNING id",
                    (author, count),
                ).fetchall()
            ][::-1]  # newest first
            for author, count in ((busy, 9), (quiet, 2))
        }
    asks = [
        (busy, Page(4, None)),
        (quiet, Page(4, None)),
        (empty, Page(4, None)),
        (busy, Page(4, made[busy][3])),
        (999_999_999_999, Page(4, None)),
        (busy, Page(4, made[busy][7])),
        (quiet, Page(1, None)),
    ]

    async def read(posts: Posts, reader: int, author: int, page: Page) -> Any:
        with read_your_writes.known(WritePosition(reader, None)):
            return await posts.list_by_author(as_caller(reader), author, page)

    primary = settings.with_overrides({"database_replica_url": None})  # not about replica lag

    async def scenario() -> tuple[list[Any], list[Any], list[int]]:
        client = create_redis(primary)
        db = Database(primary, client)
        await db.open()
        posts = Posts(db, Counters(db, client))
        connections: list[int] = []
        for name in ("reading", "reading_from"):  # spies: the real reads run
            real = getattr(db, name)

            def counted(*args: Any, real: Any = real, **kwargs: Any) -> Any:
                connections.append(1)
                return real(*args, **kwargs)

            setattr(db, name, counted)
        try:
            alone = [  # first: they also bring the posts' counters into Redis
                await read(posts, busy + 100 + i, *ask) if ask[0] != 999_999_999_999 else None
                for i, ask in enumerate(asks)
            ]
            connections.clear()
            together = await asyncio.gather(
                *(read(posts, busy + 100 + i, *ask) for i, ask in enumerate(asks)),
                return_exceptions=True,
            )
            taken = len(connections)
        finally:
            await db.close()
            await client.aclose()
        return together, alone, [taken]

    together, alone, (taken,) = asyncio.run(scenario())
    ids = [
        None if isinstance(p, BaseException) else [post.id for post in p.posts] for p in together
    ]
    assert ids == [
        made[busy][:4],
        made[quiet],
        [],
        made[busy][4:8],
        None,
        made[busy][8:],
        made[quiet][:1],
    ]
    assert isinstance(together[4], NotFound)
    for i, page in enumerate(together):
        if i != 4:
            assert page.next_cursor == alone[i].next_cursor
            assert [p.content for p in page.posts] == [p.content for p in alone[i].posts]
    assert [bool(page.next_cursor) for i, page in enumerate(together) if i != 4] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    assert taken == 3  # 7 pages, 2 in flight at most: two alone, then the other five at once
