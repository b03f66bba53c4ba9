"""Mentions and notifications (issue 15 item 5), against the real stores and the whole pipeline:
the write path resolves mentions, CDC carries follows, likes, comments and mentions, and the
notifications consumer writes each recipient's notifications to Postgres once."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
import pytest
import ray
import redis
import requests
from ray import serve

from actors import notification_consumer
from actors.background import NAMESPACE
from dmb.composition import Components
from dmb.settings import Settings
from dmb.stores.change_events import Liked
from dmb.v1 import follows_pb2, notifications_pb2, posts_pb2
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import as_caller, eventually, make_users, register_and_login

FOLLOW = notifications_pb2.NOTIFICATION_KIND_FOLLOW
LIKE = notifications_pb2.NOTIFICATION_KIND_LIKE
COMMENT = notifications_pb2.NOTIFICATION_KIND_COMMENT
MENTION = notifications_pb2.NOTIFICATION_KIND_MENTION


@pytest.fixture(scope="module")
def h(serve_system: LocalSystem) -> dict[str, Any]:
    return {
        app: serve.get_deployment_handle(name, app_name=app)
        for app, name in (
            ("posts", "PostService"),
            ("follows", "FollowService"),
            ("notifications", "NotificationService"),
        )
    }


def _call(h: dict[str, Any], app: str, method: str, request: Any, who: int) -> Any:
    return getattr(h[app], method).remote(request, caller=as_caller(who)).result()


def _follow(h: dict[str, Any], follower: int, followee: int) -> None:
    _call(h, "follows", "Follow", follows_pb2.FollowRequest(user_id=followee), follower)


def _post(h: dict[str, Any], author: int, text: str) -> int:
    reply = _call(h, "posts", "CreatePost", posts_pb2.CreatePostRequest(content=text), author)
    return int(reply.post.id)


def _like(h: dict[str, Any], who: int, post: int) -> None:
    _call(h, "posts", "LikePost", posts_pb2.LikePostRequest(post_id=post), who)


def _comment(h: dict[str, Any], who: int, post: int, text: str) -> int:
    request = posts_pb2.AddCommentRequest(post_id=post, content=text)
    return int(_call(h, "posts", "AddComment", request, who).comment.id)


def _page(
    h: dict[str, Any], who: int, size: int = 100, cursor: str = ""
) -> notifications_pb2.ListNotificationsResponse:
    request = notifications_pb2.ListNotificationsRequest(page_size=size, cursor=cursor)
    reply: notifications_pb2.ListNotificationsResponse = _call(
        h, "notifications", "ListNotifications", request, who
    )
    return reply


def _items(h: dict[str, Any], who: int) -> list[tuple[int, tuple[int, ...], int, int, int]]:
    """(kind, actors, count, post, comment) of every item, newest first."""
    return [
        (n.kind, tuple(n.actor_ids), n.actor_count, n.post_id, n.comment_id)
        for n in _page(h, who).notifications
    ]


def _rows(database_url: str, recipient: int) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM notifications WHERE recipient_id = %s", (recipient,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _named(database_url: str, user: int) -> str:
    name = f"n_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET username = %s WHERE id = %s", (name, user))
    return name


def test_follow_like_comment_and_mention_notify_once(h: dict[str, Any], database_url: str) -> None:
    alice, bob, carol = make_users(database_url, 3)
    carol_name = _named(database_url, carol)
    _follow(h, bob, alice)
    post = _post(h, alice, f"hello @{carol_name.upper()} and @{carol_name} and @nobody_here_x")
    _like(h, bob, post)
    comment = _comment(h, bob, post, f"nice, @{carol_name}")
    _like(h, alice, post)  # her own post: nothing
    _comment(h, alice, post, "thanks")  # nor her own comment
    eventually(lambda: len(_items(h, alice)) == 3, "alice's follow, like and comment")
    # Follows, likes and comments are topics of their own: their order among each other is
    # the order the consumer wrote them in.
    assert set(_items(h, alice)) == {
        (COMMENT, (bob,), 1, post, comment),
        (LIKE, (bob,), 1, post, 0),
        (FOLLOW, (bob,), 1, 0, 0),
    }
    eventually(lambda: len(_items(h, carol)) == 2, "carol's two mentions")
    assert _items(h, carol) == [
        (MENTION, (bob,), 1, post, comment),
        (MENTION, (alice,), 1, post, 0),
    ]
    assert _page(h, alice).unread_count == 3
    assert _items(h, bob) == []  # no notification for one's own actions


def test_replays_write_nothing_twice(
    h: dict[str, Any], database_url: str, settings: Settings
) -> None:
    alice, bob = make_users(database_url, 2)
    post = _post(h, alice, "replay me")
    _like(h, bob, post)
    eventually(lambda: _rows(database_url, alice) == 1, "the like's notification")
    consumer: Any = ray.get_actor(notification_consumer.NAME, namespace=NAMESPACE)
    ray.kill(consumer, no_restart=False)  # Ray restarts it: uncommitted events come again
    components = Components(settings)  # and a handler that sees the same event again
    handler = components.notification_handler

    async def again() -> None:
        await components.ready()
        try:
            await handler.handle(Liked(post, bob))
            await handler.handle(Liked(post, bob))
        finally:
            await components.close()

    asyncio.run(again())
    _follow(h, bob, alice)  # the restarted consumer carries on
    eventually(lambda: _rows(database_url, alice) == 2, "the follow after the restart")
    assert sorted(item[0] for item in _items(h, alice)) == [FOLLOW, LIKE]


def test_likes_of_one_post_are_grouped_and_an_unlike_takes_its_own_away(
    h: dict[str, Any], database_url: str
) -> None:
    author, *likers = make_users(database_url, 5)
    post = _post(h, author, "like me")
    other = _post(h, author, "and me")
    for liker in likers:
        _like(h, liker, post)
    _like(h, likers[0], other)
    eventually(lambda: _rows(database_url, author) == 5, "five likes")
    assert set(_items(h, author)) == {
        (LIKE, (likers[0],), 1, other, 0),
        (LIKE, (likers[3], likers[2], likers[1]), 4, post, 0),  # the newest three, of four
    }
    _call(h, "posts", "UnlikePost", posts_pb2.UnlikePostRequest(post_id=post), likers[3])
    eventually(lambda: _rows(database_url, author) == 4, "the unlike")
    grouped = {item[3]: item for item in _items(h, author)}
    assert grouped[post] == (LIKE, (likers[2], likers[1], likers[0]), 3, post, 0)
    _call(h, "posts", "DeletePost", posts_pb2.DeletePostRequest(post_id=post), author)
    assert _items(h, author) == [(LIKE, (likers[0],), 1, other, 0)]  # gone with the post


def test_blocked_and_muted_accounts_do_not_notify(h: dict[str, Any], database_url: str) -> None:
    alice, blocked, muted, friend = make_users(database_url, 4)
    post = _post(h, alice, "quiet please")
    _call(h, "follows", "BlockUser", follows_pb2.BlockUserRequest(user_id=blocked), alice)
    _call(h, "follows", "MuteUser", follows_pb2.MuteUserRequest(user_id=muted), alice)
    _follow(h, muted, alice)
    _like(h, muted, post)
    _comment(h, muted, post, f"a muted comment on {post}")
    _like(h, friend, post)  # the last event on the post's partition: the others came first
    eventually(lambda: _rows(database_url, alice) >= 1, "the friend's like")
    time.sleep(1)
    assert _items(h, alice) == [(LIKE, (friend,), 1, post, 0)]
    assert _rows(database_url, alice) == 1
    # A block made later hides what the account did before, at once.
    _call(h, "follows", "BlockUser", follows_pb2.BlockUserRequest(user_id=friend), alice)
    assert _items(h, alice) == []


def test_paging_unread_count_and_mark_read(h: dict[str, Any], database_url: str) -> None:
    target, *fans = make_users(database_url, 5)
    for fan in fans:
        _follow(h, fan, target)
    eventually(lambda: _rows(database_url, target) == 4, "four follows")
    first = _page(h, target, size=3)
    second = _page(h, target, size=3, cursor=first.next_cursor)
    assert [n.actor_ids[0] for n in [*first.notifications, *second.notifications]] == fans[::-1]
    assert second.next_cursor == ""
    assert first.unread_count == 4
    assert all(n.unread for n in first.notifications)
    up_to = first.notifications[1].id  # read up to the second newest
    mark = notifications_pb2.MarkNotificationsReadRequest(up_to_id=up_to)
    assert _call(h, "notifications", "MarkNotificationsRead", mark, target).unread_count == 1
    page = _page(h, target)
    assert [n.unread for n in page.notifications] == [True, False, False, False]
    older = notifications_pb2.MarkNotificationsReadRequest(up_to_id=1)
    assert _call(h, "notifications", "MarkNotificationsRead", older, target).unread_count == 1
    newest = page.notifications[0].id
    everything = notifications_pb2.MarkNotificationsReadRequest(up_to_id=newest + 10**6)
    assert _call(h, "notifications", "MarkNotificationsRead", everything, target).unread_count == 0


def test_notifications_survive_a_redis_flush(
    h: dict[str, Any], database_url: str, settings: Settings
) -> None:
    alice, bob = make_users(database_url, 2)
    _follow(h, bob, alice)
    eventually(lambda: _rows(database_url, alice) == 1, "the follow")
    assert settings.redis_url is not None
    redis.Redis.from_url(settings.redis_url.get_secret_value()).flushall()
    assert _items(h, alice) == [(FOLLOW, (bob,), 1, 0, 0)]


def test_http_routes(serve_system: LocalSystem) -> None:
    base = str(serve_system.addresses()["http"])
    suffix = uuid.uuid4().hex[:8]
    alice = register_and_login(base, f"na_{suffix}", "correct horse battery")
    bob = register_and_login(base, f"nb_{suffix}", "correct horse battery")
    followed = requests.post(
        f"{base}/v1/users/{alice['userId']}/follow", headers=bob["headers"], timeout=30
    )
    assert followed.status_code == 200, followed.text

    def listed() -> dict[str, Any]:
        reply = requests.get(f"{base}/v1/notifications", headers=alice["headers"], timeout=30)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    eventually(lambda: len(listed()["notifications"]) == 1, "the follow over HTTP")
    body = listed()
    assert body["unreadCount"] == 1
    item = body["notifications"][0]
    assert item["kind"] == "NOTIFICATION_KIND_FOLLOW"
    assert item["actorIds"] == [bob["userId"]]
    read = requests.post(
        f"{base}/v1/notifications:markRead",
        json={"upToId": item["id"]},
        headers=alice["headers"],
        timeout=30,
    )
    assert read.status_code == 200, read.text
    assert read.json()["unreadCount"] == 0
    for bad in ("?pageSize=101", "?cursor=nope", "?pageSize=-1"):
        reply = requests.get(f"{base}/v1/notifications{bad}", headers=alice["headers"], timeout=30)
        assert reply.status_code == 400, (bad, reply.text)
    refused = requests.post(
        f"{base}/v1/notifications:markRead",
        json={"upToId": "-5"},
        headers=alice["headers"],
        timeout=30,
    )
    assert refused.status_code == 400, refused.text
    empty = requests.post(
        f"{base}/v1/notifications:markRead", json={}, headers=alice["headers"], timeout=30
    )
    assert empty.status_code == 400, empty.text
    assert requests.get(f"{base}/v1/notifications", timeout=30).status_code == 401
