"""What a chaos run checks once the faults are over, against Postgres, the source of truth:

- lost: every write a client got a 2xx for (recorded by the locustfile, LOAD_RECORD) is a row;
- delivered: a post made now reaches its followers' open feeds by fan-out (not by a rebuild),
  for authors on every partition: a consumer or a worker that never came back fails this;
- feeds: every checked home feed is exactly its followees' posts, newest first;
- counters: every touched post's like and comment counts, as the API shows them, are its rows'
  counts, and the flushed `posts.like_count/comment_count` columns are too.

The comparisons are pure functions (unit-tested); the readers reach the system as a client
would, through the services' DeploymentHandles, from this process (the system's Ray driver).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from dmb.domain.identity import Caller


@dataclass
class Acknowledged:
    """Writes acknowledged with a 2xx: posts (id -> author), follows (follower, followee),
    likes (user, post), comments (id -> post)."""

    posts: dict[int, int] = field(default_factory=dict)
    follows: set[tuple[int, int]] = field(default_factory=set)
    likes: set[tuple[int, int]] = field(default_factory=set)
    comments: dict[int, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, lines: Iterable[str]) -> Acknowledged:
        """The locustfile's JSON lines; a torn last line (locust killed mid-write) is skipped."""
        found = cls()
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = row.get("kind")
            if kind == "post":
                found.posts[int(row["id"])] = int(row["author"])
            elif kind == "follow":
                found.follows.add((int(row["follower"]), int(row["followee"])))
            elif kind == "like":
                found.likes.add((int(row["user"]), int(row["post"])))
            elif kind == "comment":
                found.comments[int(row["id"])] = int(row["post"])
        return found

    @classmethod
    def read(cls, path: Path) -> Acknowledged:
        return cls.parse(path.read_text().splitlines() if path.exists() else [])

    def counts(self) -> dict[str, int]:
        return {
            "posts": len(self.posts),
            "follows": len(self.follows),
            "likes": len(self.likes),
            "comments": len(self.comments),
        }

    def touched_posts(self) -> set[int]:
        """Posts whose counters the run changed."""
        return {post for _, post in self.likes} | set(self.comments.values())


def missing(acknowledged: Acknowledged, stored: Acknowledged) -> dict[str, int]:
    """Per kind, how many acknowledged writes are not in `stored` (what Postgres holds)."""
    return {
        "posts": len(acknowledged.posts.keys() - stored.posts.keys()),
        "follows": len(acknowledged.follows - stored.follows),
        "likes": len(acknowledged.likes - stored.likes),
        "comments": len(acknowledged.comments.keys() - stored.comments.keys()),
    }


def stored_rows(database_url: str, acknowledged: Acknowledged) -> Acknowledged:
    """The rows Postgres holds among the acknowledged ones."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        posts = conn.execute(
            "SELECT id, author_id FROM posts WHERE id = ANY(%s)", (list(acknowledged.posts),)
        ).fetchall()
        followers = [f for f, _ in acknowledged.follows]
        follows = conn.execute(
            "SELECT follower_id, followee_id FROM follows WHERE follower_id = ANY(%s)",
            (sorted(set(followers)),),
        ).fetchall()
        likes = conn.execute(
            "SELECT user_id, post_id FROM likes WHERE post_id = ANY(%s)",
            (sorted({p for _, p in acknowledged.likes}),),
        ).fetchall()
        comments = conn.execute(
            "SELECT id, post_id FROM comments WHERE id = ANY(%s)", (list(acknowledged.comments),)
        ).fetchall()
    return Acknowledged(
        posts={int(a): int(b) for a, b in posts},
        follows={(int(a), int(b)) for a, b in follows},
        likes={(int(a), int(b)) for a, b in likes},
        comments={int(a): int(b) for a, b in comments},
    )


def lost(database_url: str, acknowledged: Acknowledged) -> dict[str, int]:
    return missing(acknowledged, stored_rows(database_url, acknowledged))


# -- feeds ---------------------------------------------------------------------------------


def expected_feeds(database_url: str, users: list[int]) -> dict[int, list[int]]:
    """Each user's followees' posts, newest first: what the home feed must show."""
    feeds: dict[int, list[int]] = {user: [] for user in users}
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT f.follower_id, p.id FROM follows f JOIN posts p ON p.author_id = f.followee_id "
            "WHERE f.follower_id = ANY(%s) AND p.author_id <> f.follower_id ORDER BY p.id DESC",
            (users,),
        )
        for user, post in rows:
            feeds[int(user)].append(int(post))
    return feeds


@dataclass(frozen=True)
class FeedDiff:
    """Feeds that differ from their followees' posts: how many, and the posts missing from
    them and shown in them wrongly, summed."""

    feeds: int
    missing_posts: int
    extra_posts: int

    def as_dict(self) -> dict[str, int]:
        return {"feeds": self.feeds, "missing_posts": self.missing_posts, "extra": self.extra_posts}


def compare_feeds(expected: dict[int, list[int]], seen: dict[int, list[int]]) -> FeedDiff:
    wrong = [user for user, posts in expected.items() if seen.get(user) != posts]
    missing_posts = sum(len(set(expected[u]) - set(seen.get(u, []))) for u in wrong)
    extra = sum(len(set(seen.get(u, [])) - set(expected[u])) for u in wrong)
    return FeedDiff(len(wrong), missing_posts, extra)


def _caller(user: int) -> Caller:
    return Caller(user_id=user, jti=uuid.uuid4().hex, expires_at=2**31)


def whole_feed(user: int, page_size: int = 100) -> list[int]:
    """The user's home feed through FeedService, every page, as a client pages it."""
    from ray import serve

    from dmb.v1 import feed_pb2

    feed = serve.get_deployment_handle("FeedService", app_name="feed")
    seen: list[int] = []
    cursor = ""
    while True:
        request = feed_pb2.GetHomeFeedRequest(page_size=page_size, cursor=cursor)
        page = feed.GetHomeFeed.remote(request, caller=_caller(user)).result(timeout_s=60)
        seen += [post.id for post in page.posts]
        cursor = page.next_cursor
        if not cursor:
            return seen


def feeds_converge(database_url: str, users: list[int], timeout: float) -> tuple[FeedDiff, float]:
    """Compare every user's feed with Postgres until they all match or `timeout` passes;
    the last difference and the seconds it took."""
    started = time.monotonic()
    while True:
        expected = expected_feeds(database_url, users)
        try:
            diff = compare_feeds(expected, {user: whole_feed(user) for user in users})
        except Exception:  # a service still coming back: not converged yet
            diff = FeedDiff(len(users), 0, 0)
        waited = time.monotonic() - started
        if diff.feeds == 0 or waited > timeout:
            return diff, waited
        time.sleep(2)


# -- delivery by fan-out -------------------------------------------------------------------


def open_pairs(
    database_url: str, users: list[int], celebrity_threshold: int, wanted: int
) -> list[tuple[int, int]]:
    """Up to `wanted` (author, reader) pairs of distinct authors below the celebrity threshold
    (their posts are fanned out), each with one of `users` as a follower. Authors spread over
    the partitions by their key, so a few dozen reach every consumer."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (f.followee_id) f.followee_id, f.follower_id FROM follows f "
            "LEFT JOIN user_stats s ON s.user_id = f.followee_id "
            "WHERE f.follower_id = ANY(%s) AND coalesce(s.follower_count, 0) < %s "
            "ORDER BY f.followee_id, f.follower_id LIMIT %s",
            (users, celebrity_threshold, wanted),
        ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def delivered_by_fanout(
    pairs: list[tuple[int, int]], in_feed: Callable[[int, int], bool], timeout: float
) -> tuple[int, float]:
    """Each author posts once; how many of the posts reached their reader's feed set (opened
    by a read first) within `timeout`, and the seconds it took."""
    from ray import serve

    from dmb.v1 import posts_pb2

    posts = serve.get_deployment_handle("PostService", app_name="posts")
    for _, reader in pairs:
        whole_feed(reader, page_size=1)  # an active reader: the feed set exists
    made = {}
    for author, reader in pairs:
        request = posts_pb2.CreatePostRequest(content="after the chaos")
        reply = posts.CreatePost.remote(request, caller=_caller(author)).result(timeout_s=60)
        made[int(reply.post.id)] = reader
    started = time.monotonic()
    while True:
        arrived = sum(in_feed(reader, post) for post, reader in made.items())
        waited = time.monotonic() - started
        if arrived == len(made) or waited > timeout:
            return arrived, waited
        time.sleep(0.5)


# -- counters ------------------------------------------------------------------------------

Counts = dict[int, tuple[int, int]]  # post -> (likes, comments)


def row_counts(database_url: str, posts: list[int]) -> tuple[Counts, Counts]:
    """(counted from the likes and comments rows, as flushed into the posts columns)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT p.id, (SELECT count(*) FROM likes l WHERE l.post_id = p.id), "
            "(SELECT count(*) FROM comments c WHERE c.post_id = p.id), p.like_count, "
            "p.comment_count FROM posts p WHERE p.id = ANY(%s)",
            (posts,),
        ).fetchall()
    counted = {int(r[0]): (int(r[1]), int(r[2])) for r in rows}
    columns = {int(r[0]): (int(r[3]), int(r[4])) for r in rows}
    return counted, columns


def api_counts(posts: list[int], reader: int) -> Counts:
    """Like and comment counts as PostService shows them (from the Redis counters)."""
    from ray import serve

    from dmb.v1 import posts_pb2

    service = serve.get_deployment_handle("PostService", app_name="posts")
    found: Counts = {}
    for start in range(0, len(posts), 500):
        request = posts_pb2.GetPostsRequest(post_ids=posts[start : start + 500])
        reply = service.GetPosts.remote(request, caller=_caller(reader)).result(timeout_s=60)
        found.update({p.id: (p.like_count, p.comment_count) for p in reply.posts})
    return found


def differing(truth: Counts, shown: Counts) -> int:
    return sum(1 for post, counts in truth.items() if shown.get(post) != counts)


def counters_agree(
    database_url: str, posts: list[int], reader: int, timeout: float
) -> dict[str, Any]:
    """How many touched posts' counts differ from their rows, in the API and in the flushed
    columns, once both agree or `timeout` passes (the flusher runs every few seconds)."""
    started = time.monotonic()
    while True:
        counted, columns = row_counts(database_url, posts)
        try:
            api = differing(counted, api_counts(posts, reader))
        except Exception:
            api = len(posts)
        flushed = differing(counted, columns)
        waited = time.monotonic() - started
        if (api == 0 and flushed == 0) or waited > timeout:
            return {
                "posts": len(counted),
                "api_differ": api,
                "columns_differ": flushed,
                "waited_s": round(waited, 1),
            }
        time.sleep(1)


def in_redis_feed(redis_url: str) -> Callable[[int, int], bool]:
    """`in_feed(reader, post)`: is the post in the reader's fanned-out feed set."""
    import redis

    from dmb.domain.feed import feed_key

    client = redis.Redis.from_url(redis_url)

    def in_feed(reader: int, post: int) -> bool:
        return client.zscore(feed_key(reader), str(post)) is not None

    return in_feed
