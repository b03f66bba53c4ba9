"""Blocks and mutes (issue 15 item 3), against the real stores and the whole feed pipeline.

A block: neither account sees the other in home feeds (fanned-out or merged at read time),
follower and following lists, comments or search; the blocked one cannot follow, like or
comment; the follows between them go, both ways. A mute hides the muted account from the
muter's home feed only, at once, and unmuting brings it back at once.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
import redis
import requests
from ray import serve

from dmb.domain.feed import feed_key
from dmb.errors import DomainError, InvalidArgument, NotFound, PermissionDenied
from dmb.settings import Settings
from dmb.v1 import feed_pb2, follows_pb2, posts_pb2, users_pb2
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import (
    as_caller,
    eventually,
    make_celebrity,
    make_users,
    register_and_login,
)


@pytest.fixture(scope="module")
def h(serve_system: LocalSystem) -> dict[str, Any]:
    return {
        app: serve.get_deployment_handle(name, app_name=app)
        for app, name in (
            ("posts", "PostService"),
            ("follows", "FollowService"),
            ("feed", "FeedService"),
            ("users", "UserService"),
        )
    }


@pytest.fixture(scope="module")
def r(settings: Settings) -> redis.Redis:
    assert settings.redis_url is not None
    return redis.Redis.from_url(settings.redis_url.get_secret_value())


def _call(h: dict[str, Any], app: str, method: str, request: Any, who: int) -> Any:
    return getattr(h[app], method).remote(request, caller=as_caller(who)).result()


def _refused(
    h: dict[str, Any], app: str, method: str, request: Any, who: int, error: type[DomainError]
) -> bool:
    """Whether the call is refused with `error` (handles raise the domain error's type)."""
    with pytest.raises(error):
        _call(h, app, method, request, who)
    return True


def _follow(h: dict[str, Any], follower: int, followee: int) -> None:
    _call(h, "follows", "Follow", follows_pb2.FollowRequest(user_id=followee), follower)


def _block(h: dict[str, Any], blocker: int, blocked: int) -> None:
    _call(h, "follows", "BlockUser", follows_pb2.BlockUserRequest(user_id=blocked), blocker)


def _mute(h: dict[str, Any], muter: int, muted: int, undo: bool = False) -> None:
    if undo:
        _call(h, "follows", "UnmuteUser", follows_pb2.UnmuteUserRequest(user_id=muted), muter)
    else:
        _call(h, "follows", "MuteUser", follows_pb2.MuteUserRequest(user_id=muted), muter)


def _post(h: dict[str, Any], author: int, text: str) -> int:
    reply = _call(h, "posts", "CreatePost", posts_pb2.CreatePostRequest(content=text), author)
    return int(reply.post.id)


def _feed(h: dict[str, Any], user: int) -> list[int]:
    page = _call(h, "feed", "GetHomeFeed", feed_pb2.GetHomeFeedRequest(page_size=100), user)
    return [post.id for post in page.posts]


def _followers(h: dict[str, Any], of: int, viewer: int) -> list[int]:
    request = follows_pb2.ListFollowersRequest(user_id=of, page_size=100)
    return list(_call(h, "follows", "ListFollowers", request, viewer).user_ids)


def _following(h: dict[str, Any], of: int, viewer: int) -> list[int]:
    request = follows_pb2.ListFollowingRequest(user_id=of, page_size=100)
    return list(_call(h, "follows", "ListFollowing", request, viewer).user_ids)


def _names(database_url: str, *users: int) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows: dict[int, str] = dict(
            conn.execute("SELECT id, username FROM users WHERE id = ANY(%s)", (list(users),))
        )
    return [str(rows[user]) for user in users]


def _found(h: dict[str, Any], viewer: int, username: str) -> bool:
    reply = _call(h, "users", "SearchUsers", users_pb2.SearchUsersRequest(q=username), viewer)
    return any(user.username == username for user in reply.users)


def _follows_between(database_url: str, a: int, b: int) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM follows WHERE (follower_id, followee_id) IN ((%s, %s), (%s, %s))",
            (a, b, b, a),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_block_hides_both_ways_and_stops_follows_likes_and_comments(
    h: dict[str, Any], r: redis.Redis, database_url: str
) -> None:
    alice, bob, carol = make_users(database_url, 3)
    for follower, followee in ((alice, bob), (bob, alice), (carol, alice), (carol, bob)):
        _follow(h, follower, followee)
    for user in (alice, bob, carol):
        _feed(h, user)  # open each feed: fan-out writes reach existing feeds only
    by_alice, by_bob = _post(h, alice, "alice writes"), _post(h, bob, "bob writes")
    eventually(
        lambda: (
            r.zscore(feed_key(alice), str(by_bob)) is not None
            and r.zscore(feed_key(bob), str(by_alice)) is not None
        ),
        "fan-out between the two before the block",
    )
    by_carol = _post(h, carol, "carol writes")
    for commenter in (alice, bob):
        request = posts_pb2.AddCommentRequest(post_id=by_carol, content=f"from {commenter}")
        _call(h, "posts", "AddComment", request, commenter)

    _block(h, alice, bob)
    _block(h, alice, bob)  # idempotent

    assert _follows_between(database_url, alice, bob) == 0  # both ways, at once
    assert by_bob not in _feed(h, alice)
    assert by_alice not in _feed(h, bob)
    eventually(  # and through CDC, out of the Redis sets themselves
        lambda: (
            r.zscore(feed_key(alice), str(by_bob)) is None
            and r.zscore(feed_key(bob), str(by_alice)) is None
        ),
        "the unfollows of the block out of both fanned-out feeds",
    )
    assert {by_alice, by_bob} <= set(_feed(h, carol))  # a third account sees both

    # Neither may follow, like or comment on the other's posts (the blocker neither).
    follow_alice, follow_bob = (follows_pb2.FollowRequest(user_id=u) for u in (alice, bob))
    assert _refused(h, "follows", "Follow", follow_alice, bob, PermissionDenied)
    assert _refused(h, "follows", "Follow", follow_bob, alice, PermissionDenied)
    like = posts_pb2.LikePostRequest(post_id=by_alice)
    assert _refused(h, "posts", "LikePost", like, bob, PermissionDenied)
    comment = posts_pb2.AddCommentRequest(post_id=by_bob, content="no")
    assert _refused(h, "posts", "AddComment", comment, alice, PermissionDenied)

    # Lists and comments: each is left out of what the other sees; a third account sees both.
    assert bob not in _following(h, carol, alice)
    assert alice not in _following(h, carol, bob)
    assert {alice, bob} <= set(_following(h, carol, carol))
    comments_request = posts_pb2.ListCommentsRequest(post_id=by_carol, page_size=100)
    seen = _call(h, "posts", "ListComments", comments_request, alice).comments
    assert [c.author_id for c in seen] == [alice]
    seen = _call(h, "posts", "ListComments", comments_request, carol).comments
    assert sorted(c.author_id for c in seen) == sorted([alice, bob])

    # Search: neither finds the other; a third account finds both.
    alice_name, bob_name = _names(database_url, alice, bob)
    assert not _found(h, alice, bob_name)
    assert not _found(h, bob, alice_name)
    assert _found(h, carol, bob_name)
    assert _found(h, carol, alice_name)

    # Unblocking ends the block (the removed follows stay removed).
    _call(h, "follows", "UnblockUser", follows_pb2.UnblockUserRequest(user_id=bob), alice)
    assert _found(h, alice, bob_name)
    assert _follows_between(database_url, alice, bob) == 0
    _follow(h, bob, alice)
    assert _follows_between(database_url, alice, bob) == 1


def test_a_mute_hides_fanned_out_and_celebrity_posts_from_the_home_feed_only(
    h: dict[str, Any], database_url: str, settings: Settings
) -> None:
    reader, normal, star = make_users(database_url, 3)
    make_celebrity(database_url, settings.celebrity_threshold, star)
    _follow(h, reader, normal)
    _follow(h, reader, star)  # a celebrity: merged at read time
    _feed(h, reader)
    from_normal, from_star = _post(h, normal, "fanned out"), _post(h, star, "read at request")
    eventually(
        lambda: {from_normal, from_star} <= set(_feed(h, reader)),
        "fan-out to the reader, and the star's post in its recent set",
    )

    _mute(h, reader, normal)
    _mute(h, reader, star)
    shown = _feed(h, reader)
    assert from_normal not in shown
    assert from_star not in shown
    assert reader in _followers(h, normal, normal)  # the follow stays; lists are unchanged
    normal_name = _names(database_url, normal)[0]
    assert _found(h, reader, normal_name)  # and search too

    _mute(h, reader, normal, undo=True)
    _mute(h, reader, star, undo=True)
    assert {from_normal, from_star} <= set(_feed(h, reader))


def test_blocks_and_mutes_are_listed_newest_first_with_cursors(
    h: dict[str, Any], database_url: str
) -> None:
    me, *others = make_users(database_url, 5)
    for other in others:
        _block(h, me, other)
        _mute(h, me, other)
    for method, request_type in (
        ("ListBlocks", follows_pb2.ListBlocksRequest),
        ("ListMutes", follows_pb2.ListMutesRequest),
    ):
        seen: list[int] = []
        cursor = ""
        while True:
            page = _call(h, "follows", method, request_type(page_size=3, cursor=cursor), me)
            seen += list(page.user_ids)
            cursor = page.next_cursor
            if not cursor:
                break
        assert seen == list(reversed(others)), method


def test_blocking_or_muting_yourself_or_nobody_is_refused(
    h: dict[str, Any], database_url: str
) -> None:
    (me,) = make_users(database_url, 1)
    for method, request in (
        ("BlockUser", follows_pb2.BlockUserRequest(user_id=me)),
        ("MuteUser", follows_pb2.MuteUserRequest(user_id=me)),
    ):
        assert _refused(h, "follows", method, request, me, InvalidArgument)
    nobody = 2**52
    for method, request in (
        ("BlockUser", follows_pb2.BlockUserRequest(user_id=nobody)),
        ("MuteUser", follows_pb2.MuteUserRequest(user_id=nobody)),
    ):
        assert _refused(h, "follows", method, request, me, NotFound)


def test_the_http_routes(serve_system: LocalSystem) -> None:
    base = str(serve_system.addresses()["http"])
    a = register_and_login(base, f"blk_{uuid.uuid4().hex[:10]}", "block password")
    b = register_and_login(base, f"blk_{uuid.uuid4().hex[:10]}", "block password")
    blocked = requests.post(
        f"{base}/v1/users/{b['userId']}/block", headers=a["headers"], timeout=30
    )
    assert blocked.status_code == 200, blocked.text
    listed = requests.get(f"{base}/v1/users/me/blocks", headers=a["headers"], timeout=30)
    assert listed.json()["userIds"] == [b["userId"]]
    follow = requests.post(
        f"{base}/v1/users/{a['userId']}/follow", headers=b["headers"], timeout=30
    )
    assert follow.status_code == 403, follow.text
    muted = requests.post(f"{base}/v1/users/{b['userId']}/mute", headers=a["headers"], timeout=30)
    assert muted.status_code == 200
    unmuted = requests.delete(
        f"{base}/v1/users/{b['userId']}/mute", headers=a["headers"], timeout=30
    )
    assert unmuted.status_code == 200
    assert requests.get(f"{base}/v1/users/me/mutes", headers=a["headers"], timeout=30).json() == {
        "userIds": [],
        "nextCursor": "",
    }
