"""FollowService through the deployed Serve app (handle and gRPC), and the celebrity rule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import psycopg
import pytest
from ray import serve

from dmb.domain.follows import CelebrityRule, FollowerBatches, FollowGraph
from dmb.errors import InvalidArgument, NotFound
from dmb.settings import Settings
from dmb.stores.postgres import Database
from dmb.v1 import follows_pb2 as pb
from dmb.v1 import follows_pb2_grpc
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import as_caller, grpc_metadata, make_users


@pytest.fixture(scope="module")
def follows(serve_system: LocalSystem) -> Any:
    return serve.get_deployment_handle("FollowService", app_name="follows")


def _follow(follows: Any, follower: int, followee: int) -> None:
    follows.Follow.remote(pb.FollowRequest(user_id=followee), caller=as_caller(follower)).result()


def _stats(follows: Any, user: int, reader: int) -> pb.GetStatsResponse:
    """Stats as `reader` sees them: reads go to the replica unless the reader just wrote."""
    response: pb.GetStatsResponse = follows.GetStats.remote(
        pb.GetStatsRequest(user_id=user), caller=as_caller(reader)
    ).result()
    return response


def test_follow_and_unfollow_are_idempotent(follows: Any, database_url: str) -> None:
    fan, star = make_users(database_url, 2)
    _follow(follows, fan, star)
    _follow(follows, fan, star)
    assert _stats(follows, star, reader=fan).follower_count == 1
    assert _stats(follows, fan, reader=fan).following_count == 1
    for _ in range(2):
        follows.Unfollow.remote(pb.UnfollowRequest(user_id=star), caller=as_caller(fan)).result()
    assert _stats(follows, star, reader=fan).follower_count == 0


def test_self_follow_and_missing_users_are_clear_errors(follows: Any, database_url: str) -> None:
    (me,) = make_users(database_url, 1)
    with pytest.raises(InvalidArgument, match="yourself"):
        _follow(follows, me, me)
    with pytest.raises(NotFound, match="does not exist"):
        _follow(follows, me, 1)
    with pytest.raises(NotFound):
        follows.Unfollow.remote(pb.UnfollowRequest(user_id=1), caller=as_caller(me)).result()
    with pytest.raises(InvalidArgument):
        _follow(follows, me, -5)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM follows WHERE follower_id = %s", (me,)).fetchone()
    assert row == (0,)


def test_paging_never_repeats_or_skips_while_follows_arrive(
    follows: Any, database_url: str
) -> None:
    star, *fans = make_users(database_url, 26)
    for fan in fans[:20]:
        _follow(follows, fan, star)
    seen: list[int] = []
    cursor = ""
    pages = 0
    while True:
        page = follows.ListFollowers.remote(  # read as the last writer: sees every follow
            pb.ListFollowersRequest(user_id=star, page_size=7, cursor=cursor),
            caller=as_caller(fans[19]),
        ).result()
        seen += list(page.user_ids)
        pages += 1
        if pages == 1:  # new follows between pages must not disturb the walk
            for fan in fans[20:]:
                _follow(follows, fan, star)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(fans[:20])
    assert len(seen) == len(set(seen))
    assert pages == 3
    with pytest.raises(InvalidArgument, match="cursor"):
        follows.ListFollowers.remote(
            pb.ListFollowersRequest(user_id=star, cursor="garbage!"), caller=as_caller(star)
        ).result()
    with pytest.raises(InvalidArgument, match="page_size"):
        follows.ListFollowing.remote(
            pb.ListFollowingRequest(user_id=star, page_size=101), caller=as_caller(star)
        ).result()
    following = follows.ListFollowing.remote(
        pb.ListFollowingRequest(user_id=fans[0]), caller=as_caller(star)
    ).result()
    assert list(following.user_ids) == [star]


def test_counts_stay_exact_under_concurrent_follows(follows: Any, database_url: str) -> None:
    star, *fans = make_users(database_url, 41)

    async def churn() -> None:
        await asyncio.gather(
            *[
                follows.Follow.remote(pb.FollowRequest(user_id=star), caller=as_caller(fan))
                for fan in fans
            ]
        )
        await asyncio.gather(
            *[
                follows.Unfollow.remote(pb.UnfollowRequest(user_id=star), caller=as_caller(fan))
                for fan in fans[::2]
            ]
        )

    asyncio.run(churn())
    # The primary's count is exact at once; readers see it once the replica has replayed.
    expected = len(fans) - len(fans[::2])
    deadline = time.monotonic() + 30
    while _stats(follows, star, reader=star).follower_count != expected:
        assert time.monotonic() < deadline, "replica never showed the exact count"
        time.sleep(0.05)


def test_celebrity_flag_flips_at_the_threshold(settings: Settings, database_url: str) -> None:
    star, *fans = make_users(database_url, 4)

    async def scenario() -> list[Any]:
        # On the primary only: this is about the threshold, not replica lag (tested above).
        primary_only = settings.with_overrides(
            {"celebrity_threshold": 3, "database_replica_url": None}
        )
        db = Database(primary_only)
        await db.open()
        rule = CelebrityRule(primary_only.celebrity_threshold)
        graph = FollowGraph(db, rule)
        try:
            flags: list[Any] = []
            for fan in fans:
                await graph.follow(as_caller(fan), star)
                flags.append((await graph.stats(as_caller(fan), star)).is_celebrity)
            async with db.reading() as conn:
                flags.append(await rule.followed_by(conn, fans[0]))
            flags.append(await FollowerBatches(db, 2).of(star))
            return flags
        finally:
            await db.close()

    first, second, third, celebrities, page = asyncio.run(scenario())
    assert (first, second, third) == (False, False, True)
    assert celebrities == [star]
    assert page[0] == [fans[2], fans[1]]


def test_grpc_ingress_serves_follows_with_the_jwt(
    grpc_channel: grpc.Channel, issue_token: Callable[[int], str], database_url: str
) -> None:
    fan, star = make_users(database_url, 2)
    stub = follows_pb2_grpc.FollowServiceStub(grpc_channel)
    stub.Follow(pb.FollowRequest(user_id=star), metadata=grpc_metadata("follows", issue_token(fan)))
    stats = stub.GetStats(
        pb.GetStatsRequest(user_id=star), metadata=grpc_metadata("follows", issue_token(fan))
    )
    assert stats.follower_count == 1
    with pytest.raises(grpc.RpcError) as refused:
        stub.Follow(pb.FollowRequest(user_id=star), metadata=grpc_metadata("follows"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as self_follow:
        stub.Follow(
            pb.FollowRequest(user_id=fan), metadata=grpc_metadata("follows", issue_token(fan))
        )
    assert self_follow.value.code() == grpc.StatusCode.INVALID_ARGUMENT
