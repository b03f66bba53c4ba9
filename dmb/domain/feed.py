"""Home feeds in Redis sorted sets: fan-out writes, celebrity merge on read, cursor paging.

`feed:<user>` holds post ids (score = id, so newest first) written by fan-out on write and
trimmed to DMB_FEED_MAX_LENGTH. `posts:<author>` holds each author's recent posts: celebrities'
posts are read from there at request time instead of being fanned out. Either set is rebuilt
from Postgres when missing, so losing Redis loses no feed.

Writes only ever add to a set that exists. A write into a missing (evicted, flushed) set would
create it holding just the new post, and the next read would take that for the whole feed; so
the write is skipped and the rebuild brings the post along. A rebuild first puts the member "0"
(score 0) into the set, then reads the primary, then adds what it read: a post committed before
the read is in the read, and a fan-out after the mark finds the set and writes. Reads only look
at scores above 0, and an empty rebuilt set keeps just the mark.

Every set has a time to live (DMB_FEED_TTL_SECONDS), set by the rebuild and renewed by every
read (the read's EXPIRE also tells whether the set exists, in the same round trip); writes do
not renew it. So the feed of a user who stopped reading expires, and Redis memory follows the
active readers instead of growing with every account that ever read once. A rebuild writes to
Redis: when Redis refuses writes (out of memory) it fails, and the read answers 503.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from dmb.domain.follows import CelebrityRule
from dmb.domain.identity import Caller
from dmb.domain.paging import Page, encode_cursor
from dmb.domain.posts import Posts
from dmb.stores.postgres import Database
from dmb.stores.redis import LuaScript, run_pipeline
from dmb.v1 import resources_pb2

_EMPTY_MARK = "0"
# KEYS[1] a sorted set; ARGV[1] its maximum length; ARGV[2..] post ids (each its own score).
_ADD_IF_PRESENT = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i])
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[1]) + 1))
return 1
""")


def feed_key(user_id: int) -> str:
    return f"feed:{user_id}"


def author_key(author_id: int) -> str:
    return f"posts:{author_id}"


class FeedWriter:
    """Idempotent writes to feed sets: replays of the same event change nothing."""

    def __init__(self, redis: aioredis.Redis, max_length: int) -> None:
        self._redis = redis
        self._max = max_length

    async def forget_all(self) -> int:
        """Drop every home feed and author set; each is rebuilt from Postgres on its next read.

        For when the event stream lost events it had acknowledged (a broker that restarted
        without its data): the sets may miss posts that no replay will bring, and Postgres is
        the source of truth. Returns how many keys went."""
        dropped = 0
        for pattern in (feed_key(0).replace("0", "*"), author_key(0).replace("0", "*")):
            batch: list[str] = []
            async for key in self._redis.scan_iter(match=pattern, count=1_000):
                batch.append(key)
                if len(batch) >= 1_000:
                    dropped += int(await self._redis.unlink(*batch))
                    batch = []
            if batch:
                dropped += int(await self._redis.unlink(*batch))
        return dropped

    async def add_to_feeds(self, post_ids: Sequence[int], user_ids: Sequence[int]) -> None:
        """One pipelined round trip: add the posts to each existing feed and trim it."""
        if post_ids:
            await self._add_if_present([(feed_key(user), post_ids) for user in user_ids])

    async def remove_from_feeds(self, post_ids: Sequence[int], user_ids: Sequence[int]) -> None:
        if not post_ids:
            return
        members = [str(p) for p in post_ids]
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.zrem(feed_key(user_id), *members)
            await pipe.execute()

    async def forget_user(self, user_id: int) -> None:
        """A deleted account's own home feed and author set (one slot each: two DELs)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(feed_key(user_id))
            pipe.delete(author_key(user_id))
            await pipe.execute()

    async def add_author_post(self, author_id: int, post_id: int) -> None:
        await self._add_if_present([(author_key(author_id), [post_id])])

    async def remove_author_post(self, author_id: int, post_id: int) -> None:
        await self._redis.zrem(author_key(author_id), str(post_id))

    async def merge(self, user_id: int, post_ids: Sequence[int]) -> None:
        if post_ids:
            await self._add_if_present([(feed_key(user_id), post_ids)])

    async def _add_if_present(self, writes: Sequence[tuple[str, Sequence[int]]]) -> None:
        """Every write in one pipeline of single-key script calls (fine on Redis Cluster)."""

        def fill(pipe: Pipeline) -> None:
            for key, post_ids in writes:
                _ADD_IF_PRESENT.queue(pipe, [key], [self._max, *post_ids])

        await run_pipeline(self._redis, [_ADD_IF_PRESENT], fill)


async def read_windows(
    redis: aioredis.Redis, keys: Sequence[str], upper: str, count: int | None, ttl: int
) -> tuple[list[list[int]], list[int]]:
    """Each key's window of `count` ids (None: all) below `upper` (scores above 0: the mark is
    skipped) and which keys are missing, from one pipeline that also renews each existing key's
    time to live to `ttl` seconds (EXPIRE answers whether the key exists; Redis allows it even
    when out of memory)."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            if count is None:
                pipe.zrevrangebyscore(key, upper, "(0")
            else:
                pipe.zrevrangebyscore(key, upper, "(0", start=0, num=count)
            pipe.expire(key, ttl)
        replies = await pipe.execute()
    windows = [[int(member) for member in replies[2 * i]] for i in range(len(keys))]
    missing = [i for i in range(len(keys)) if not replies[2 * i + 1]]
    return windows, missing


class SetRebuilder:
    """Rebuilds a lost sorted set from the primary: mark, read, add (the module docstring's
    order, which keeps a fan-out that races the rebuild from being lost)."""

    def __init__(self, db: Database, redis: aioredis.Redis, ttl_seconds: int) -> None:
        self._db = db
        self._redis = redis
        self.ttl_seconds = ttl_seconds

    async def rebuild(self, key: str, query: str, params: tuple[Any, ...]) -> list[int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {_EMPTY_MARK: 0})
            pipe.expire(key, self.ttl_seconds)
            await pipe.execute()
        async with self._db.reading(fresh=True) as conn:
            cursor = await conn.execute(query, params)
            ids = [int(row[0]) for row in await cursor.fetchall()]
        if ids:
            try:
                await self._redis.zadd(key, {str(i): i for i in ids})
            except RedisError:
                # Refused half-way (out of memory): a set holding only the mark would read as
                # an empty feed from now on. Drop it (DEL is allowed under OOM) and fail.
                with contextlib.suppress(RedisError):
                    await self._redis.delete(key)
                raise
        return ids


class AuthorPosts:
    """`posts:<author>`: each author's recent posts, rebuilt from Postgres when missing."""

    def __init__(self, redis: aioredis.Redis, rebuilder: SetRebuilder, max_length: int) -> None:
        self._redis = redis
        self._rebuilder = rebuilder
        self._max = max_length

    async def rebuild(self, author_id: int) -> list[int]:
        return await self._rebuilder.rebuild(
            author_key(author_id),
            "SELECT id FROM posts WHERE author_id = %s ORDER BY id DESC LIMIT %s",
            (author_id, self._max),
        )

    async def recent(self, author_id: int) -> list[int]:
        """The author's recent post ids, newest first (rebuilding the set when missing)."""
        (cached,), missing = await read_windows(
            self._redis, [author_key(author_id)], "+inf", None, self._rebuilder.ttl_seconds
        )
        return await self.rebuild(author_id) if missing else cached


@dataclass(frozen=True)
class FeedPage:
    posts: list[resources_pb2.Post]
    next_cursor: str


class HomeFeed:
    """GetHomeFeed: merge the fanned-out feed with followed celebrities' recent posts.

    One page costs one database connection (celebrities followed, then hydration, on it), one
    pipelined Redis round trip for every sorted set's window and existence, and the counters
    read, which runs beside the hydration query. Sets found missing are rebuilt from Postgres
    and read again; that only happens after an eviction or a Redis flush.
    """

    def __init__(
        self,
        db: Database,
        redis: aioredis.Redis,
        posts: Posts,
        authors: AuthorPosts,
        rebuilder: SetRebuilder,
        celebrities: CelebrityRule,
        max_length: int,
    ) -> None:
        self._db = db
        self._redis = redis
        self._posts = posts
        self._authors = authors
        self._rebuilder = rebuilder
        self._celebrities = celebrities
        self._max = max_length

    async def page(self, caller: Caller, page: Page) -> FeedPage:
        user = caller.user_id
        async with self._db.reading(for_user=user) as conn:
            celebrities = await self._celebrities.followed_by(conn, user)
            windows = await self._windows(user, celebrities, page)
            candidates = sorted({post_id for ids in windows for post_id in ids}, reverse=True)
            window = candidates[: page.size]
            more = len(candidates) > page.size
            hydrated = await self._posts.hydrate(conn, window, home_feed_of=user)
        visible = [p for p in hydrated if p.author_id != user]
        return FeedPage(visible, encode_cursor(window[-1]) if more and window else "")

    async def open(self, user_id: int) -> bool:
        """Make sure the user's feed set exists, as their first read would (fan-out writes only
        reach feeds that exist): for warming feeds of active users. True when it was rebuilt."""
        ttl = self._rebuilder.ttl_seconds
        _, missing = await read_windows(self._redis, [feed_key(user_id)], "+inf", 0, ttl)
        if missing:
            await self._rebuild_feed(user_id)
        return bool(missing)

    async def _windows(self, user: int, celebrities: Sequence[int], page: Page) -> list[list[int]]:
        """The next `page.size + 1` ids below the cursor of the user's feed and of each
        celebrity's set, in one round trip; missing sets are rebuilt, then read again."""
        keys = [feed_key(user), *[author_key(c) for c in celebrities]]
        upper = f"({page.after}" if page.after else "+inf"
        ttl = self._rebuilder.ttl_seconds
        windows, missing = await read_windows(self._redis, keys, upper, page.size + 1, ttl)
        if missing:
            for index in missing:
                if index == 0:
                    await self._rebuild_feed(user)
                else:
                    await self._authors.rebuild(celebrities[index - 1])
            again, _ = await read_windows(
                self._redis, [keys[i] for i in missing], upper, page.size + 1, ttl
            )
            for index, ids in zip(missing, again, strict=True):
                windows[index] = ids
        return windows

    async def _rebuild_feed(self, user_id: int) -> None:
        """The user's fanned-out feed: posts of the accounts they follow that are not
        celebrities (those are merged in at read time)."""
        await self._rebuilder.rebuild(
            feed_key(user_id),
            "SELECT p.id FROM follows f JOIN posts p ON p.author_id = f.followee_id "
            "LEFT JOIN user_stats s ON s.user_id = f.followee_id "
            f"WHERE f.follower_id = %s AND NOT {self._celebrities.holds('s.follower_count')} "
            "ORDER BY p.id DESC LIMIT %s",
            (user_id, self._max),
        )
