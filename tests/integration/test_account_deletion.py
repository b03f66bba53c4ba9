"""Deleting an account (issue 15 item 2): DELETE /v1/users/me, through the whole pipeline.

The leaver has followers whose feeds got its posts by fan-out (one of them a celebrity), it
follows a celebrity, it liked and commented on others' posts, and it holds two sessions. After
the deletion: every token of it is refused at once, its rows are gone, its posts leave every
home feed through the CDC pipeline (the Redis sets themselves, not only what hydration shows),
everyone's counts are exact, and its username stays taken for the hold period.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import psycopg
import pytest
import redis
import requests
from ray import serve

from dmb.domain.feed import feed_key
from dmb.settings import Settings
from dmb.v1 import feed_pb2, follows_pb2, posts_pb2
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import (
    as_caller,
    eventually,
    log_in,
    make_celebrity,
    make_users,
    register_and_login,
)

PASSWORD = "leaving password"


@pytest.fixture(scope="module")
def base(serve_system: LocalSystem) -> str:
    return str(serve_system.addresses()["http"])


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


def _follow(h: dict[str, Any], follower: int, followee: int) -> None:
    request = follows_pb2.FollowRequest(user_id=followee)
    h["follows"].Follow.remote(request, caller=as_caller(follower)).result()


def _post(h: dict[str, Any], author: int, text: str) -> int:
    request = posts_pb2.CreatePostRequest(content=text)
    return int(h["posts"].CreatePost.remote(request, caller=as_caller(author)).result().post.id)


def _feed_ids(h: dict[str, Any], user: int) -> list[int]:
    request = feed_pb2.GetHomeFeedRequest(page_size=100)
    page = h["feed"].GetHomeFeed.remote(request, caller=as_caller(user)).result()
    return [post.id for post in page.posts]


def _counts(h: dict[str, Any], post_id: int) -> tuple[int, int]:
    request = posts_pb2.GetPostRequest(post_id=post_id)
    post = h["posts"].GetPost.remote(request, caller=as_caller(1)).result().post
    return int(post.like_count), int(post.comment_count)


def _stats(h: dict[str, Any], user: int) -> tuple[int, int]:
    request = follows_pb2.GetStatsRequest(user_id=user)
    stats = h["follows"].GetStats.remote(request, caller=as_caller(user)).result()
    return int(stats.follower_count), int(stats.following_count)


def _rows(database_url: str, user: int) -> dict[str, int]:
    queries = {
        "users": "SELECT count(*) FROM users WHERE id = %s",
        "posts": "SELECT count(*) FROM posts WHERE author_id = %s",
        "likes": "SELECT count(*) FROM likes WHERE user_id = %s",
        "comments": "SELECT count(*) FROM comments WHERE author_id = %s",
        "follows": "SELECT count(*) FROM follows WHERE %s IN (follower_id, followee_id)",
        "refresh_tokens": "SELECT count(*) FROM refresh_tokens WHERE user_id = %s",
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        return {
            name: int(conn.execute(query, (user,)).fetchone()[0])  # type: ignore[index]
            for name, query in queries.items()
        }


def _holds(r: redis.Redis, reader: int, posts: list[int], expected: int) -> bool:
    """Whether the reader's feed set holds `expected` of `posts`."""
    return sum(r.zscore(feed_key(reader), str(post)) is not None for post in posts) == expected


def _departed(database_url: str, user: int) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM departed_followers WHERE followee_id = %s", (user,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _delete(base: str, headers: dict[str, str], password: str) -> requests.Response:
    return requests.delete(
        f"{base}/v1/users/me", json={"password": password}, headers=headers, timeout=30
    )


def test_a_deleted_account_leaves_feeds_lists_and_counts_and_its_tokens_stop(
    base: str,
    handles: dict[str, Any],
    r: redis.Redis,
    database_url: str,
    settings: Settings,
) -> None:
    name = f"leaver_{uuid.uuid4().hex[:10]}"
    first = register_and_login(base, name, PASSWORD)
    leaver = int(first["userId"])
    second = log_in(base, name, PASSWORD)
    fan_a, fan_b, star, other = make_users(database_url, 4)
    make_celebrity(database_url, settings.celebrity_threshold, star)
    for fan in (fan_a, fan_b, star):  # a celebrity among its followers
        _follow(handles, fan, leaver)
    _follow(handles, leaver, star)
    for reader in (fan_a, fan_b, star, leaver):
        _feed_ids(handles, reader)  # open each feed, as an active user has

    posts = [_post(handles, leaver, f"leaving soon {i}") for i in range(3)]
    for reader in (fan_a, fan_b, star):
        eventually(
            functools.partial(_holds, r, reader, posts, len(posts)),
            f"fan-out of the leaver's posts into {reader}'s feed",
        )
    theirs, starry = _post(handles, other, "someone else's"), _post(handles, star, "a star's")
    for post in (theirs, starry):
        headers = first["headers"]
        assert requests.post(f"{base}/v1/posts/{post}/likes", headers=headers, timeout=30).ok
    comment = requests.post(
        f"{base}/v1/posts/{theirs}/comments",
        json={"content": "bye"},
        headers=first["headers"],
        timeout=30,
    )
    assert comment.status_code == 200, comment.text
    assert _counts(handles, theirs) == (1, 1)
    star_followers, _ = _stats(handles, star)
    _, fan_following = _stats(handles, fan_a)

    wrong = _delete(base, first["headers"], "not the password")
    assert wrong.status_code == 403, wrong.text
    assert _rows(database_url, leaver)["users"] == 1  # a wrong password changes nothing

    deleted = _delete(base, first["headers"], PASSWORD)
    assert deleted.status_code == 200, deleted.text

    # Every token of the account stops at once, the one used and the other session's.
    for session in (first, second):
        me = requests.get(f"{base}/v1/users/me", headers=session["headers"], timeout=30)
        assert me.status_code == 401, me.text
    refreshed = requests.post(
        f"{base}/v1/auth/refresh", json={"refreshToken": second["refreshToken"]}, timeout=30
    )
    assert refreshed.status_code == 401
    relogin = requests.post(
        f"{base}/v1/auth/login", json={"username": name, "password": PASSWORD}, timeout=30
    )
    assert relogin.status_code == 401

    assert _rows(database_url, leaver) == dict.fromkeys(
        ("users", "posts", "likes", "comments", "follows", "refresh_tokens"), 0
    )
    # The posts leave the Redis feed sets through the pipeline, then who the followers were is
    # forgotten.
    for reader in (fan_a, fan_b, star):
        eventually(
            functools.partial(_holds, r, reader, posts, 0),
            f"the leaver's posts out of {reader}'s feed set",
        )
        assert not set(posts) & set(_feed_ids(handles, reader))
    eventually(lambda: _departed(database_url, leaver) == 0, "departed followers forgotten")
    assert not r.exists(feed_key(leaver))

    # Counts stay exact: the likes and the comment are gone from the counters, and the flusher
    # writes the recount to Postgres; the follow counts of the accounts it followed or was
    # followed by drop by one.
    assert _counts(handles, theirs) == (0, 0)
    assert _counts(handles, starry) == (0, 0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        eventually(
            lambda: (
                conn.execute(
                    "SELECT like_count, comment_count FROM posts WHERE id = %s", (theirs,)
                ).fetchone()
                == (0, 0)
            ),
            "the recounted likes and comments flushed to Postgres",
        )
    assert _stats(handles, star)[0] == star_followers - 1
    assert _stats(handles, fan_a)[1] == fan_following - 1

    # The username stays taken for the hold period, with a message that says until when.
    again = requests.post(
        f"{base}/v1/users",
        json={"username": name, "email": f"new_{name}@example.com", "password": PASSWORD},
        timeout=30,
    )
    assert again.status_code == 409, again.text
    assert "deleted account" in again.json()["message"]
    gone = requests.get(f"{base}/v1/users/{leaver}", headers=_fresh_headers(base), timeout=30)
    assert gone.status_code == 404


def test_a_deleted_celebritys_posts_leave_the_feeds_that_merged_them_at_read_time(
    base: str, handles: dict[str, Any], database_url: str, settings: Settings
) -> None:
    name = f"star_{uuid.uuid4().hex[:10]}"
    star = register_and_login(base, name, PASSWORD)
    star_id = int(star["userId"])
    make_celebrity(database_url, settings.celebrity_threshold, star_id)
    (reader,) = make_users(database_url, 1)
    _follow(handles, reader, star_id)
    post = _post(handles, star_id, "read at request time")
    assert post in _feed_ids(handles, reader)

    assert _delete(base, star["headers"], PASSWORD).status_code == 200
    assert post not in _feed_ids(handles, reader)
    assert _stats(handles, reader)[1] == 0


def test_a_username_is_free_again_once_its_hold_ends(base: str, database_url: str) -> None:
    name = f"held_{uuid.uuid4().hex[:10]}"
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO account_deletions (user_id, username, post_ids, username_free_at) "
            "VALUES (dmb_next_id(), %s, '{}', now() + interval '1 hour')",
            (name,),
        )
        held = requests.post(f"{base}/v1/users", json=body, timeout=30)
        assert held.status_code == 409, held.text
        conn.execute(
            "UPDATE account_deletions SET username_free_at = now() - interval '1 second' "
            "WHERE username = %s",
            (name,),
        )
    free = requests.post(f"{base}/v1/users", json=body, timeout=30)
    assert free.status_code == 200, free.text


def test_a_bad_delete_request_is_400_and_changes_nothing(base: str, database_url: str) -> None:
    account = register_and_login(base, f"stay_{uuid.uuid4().hex[:10]}", PASSWORD)
    bodies: list[dict[str, Any]] = [
        {},
        {"password": ""},
        {"password": "x", "extra": 1},
        {"password": "a\u0000"},
    ]
    for body in bodies:
        refused = requests.delete(
            f"{base}/v1/users/me", json=body, headers=account["headers"], timeout=30
        )
        assert refused.status_code == 400, (body, refused.text)
    anonymous = requests.delete(f"{base}/v1/users/me", json={"password": PASSWORD}, timeout=30)
    assert anonymous.status_code == 401
    assert _rows(database_url, int(account["userId"]))["users"] == 1


def _fresh_headers(base: str) -> dict[str, str]:
    account = register_and_login(base, f"look_{uuid.uuid4().hex[:10]}", PASSWORD)
    headers: dict[str, str] = account["headers"]
    return headers
