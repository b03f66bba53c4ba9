"""Home feeds in Redis sorted sets: fan-out writes, celebrity merge on read, cursor paging.

`feed:<user>` holds post ids (score = id, so newest first) written by fan-out on write and
trimmed to DMB_FEED_MAX_LENGTH. `posts:<author>` holds each author's recent posts: celebrities'
posts are read from there at request time instead of being fanned out. Either set is rebuilt
from Postgres when missing, so losing Redis loses no feed. A member "0" with score 0 marks a
rebuilt set that is empty; reads only look at scores above 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from dmb.domain import follows
from dmb.domain.identity import Caller
from dmb.domain.paging import Page, encode_cursor
from dmb.domain.posts import Posts
from dmb.settings import Settings
from dmb.stores.postgres import Database
from dmb.v1 import resources_pb2

_EMPTY_MARK = "0"


def feed_key(user_id: int) -> str:
    return f"feed:{user_id}"


def author_key(author_id: int) -> str:
    return f"posts:{author_id}"


class FeedWriter:
    """Idempotent writes to feed sets: replays of the same event change nothing."""

    def __init__(self, redis: aioredis.Redis, max_length: int) -> None:
        self._redis = redis
        self._max = max_length

    async def add_to_feeds(self, post_id: int, user_ids: Sequence[int]) -> None:
        """One pipelined round trip: ZADD the post into each feed, then trim each feed."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.zadd(feed_key(user_id), {str(post_id): post_id})
                pipe.zremrangebyrank(feed_key(user_id), 0, -(self._max + 1))
            await pipe.execute()

    async def remove_from_feeds(self, post_ids: Sequence[int], user_ids: Sequence[int]) -> None:
        if not post_ids:
            return
        members = [str(p) for p in post_ids]
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.zrem(feed_key(user_id), *members)
            await pipe.execute()

    async def add_author_post(self, author_id: int, post_id: int) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(author_key(author_id), {str(post_id): post_id})
            pipe.zremrangebyrank(author_key(author_id), 0, -(self._max + 1))
            await pipe.execute()

    async def remove_author_post(self, author_id: int, post_id: int) -> None:
        await self._redis.zrem(author_key(author_id), str(post_id))

    async def merge(self, user_id: int, post_ids: Sequence[int]) -> None:
        if not post_ids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(feed_key(user_id), {str(p): p for p in post_ids})
            pipe.zremrangebyrank(feed_key(user_id), 0, -(self._max + 1))
            await pipe.execute()


@dataclass(frozen=True)
class FeedPage:
    posts: list[resources_pb2.Post]
    next_cursor: str


class HomeFeed:
    """GetHomeFeed: merge the fanned-out feed with followed celebrities' recent posts."""

    def __init__(self, settings: Settings, db: Database, redis: aioredis.Redis, posts: Posts):
        self._settings = settings
        self._db = db
        self._redis = redis
        self._posts = posts

    async def page(self, caller: Caller, page: Page) -> FeedPage:
        user = caller.user_id
        celebrities = await follows.celebrities_followed_by(
            self._db, user, self._settings.celebrity_threshold
        )
        await self._ensure_feed(user)
        for celebrity in celebrities:
            await self.ensure_author_set(celebrity)
        keys = [feed_key(user), *[author_key(c) for c in celebrities]]
        upper = f"({page.after}" if page.after else "+inf"
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrevrangebyscore(key, upper, "(0", start=0, num=page.size + 1)
            replies = await pipe.execute()
        candidates = sorted({int(m) for reply in replies for m in reply}, reverse=True)
        window = candidates[: page.size]
        more = len(candidates) > page.size
        hydrated = await self._posts.get_many(window, for_user=user)
        visible = [p for p in hydrated if p.author_id != user]
        return FeedPage(visible, encode_cursor(window[-1]) if more and window else "")

    async def _ensure_feed(self, user_id: int) -> None:
        if await self._redis.exists(feed_key(user_id)):
            return
        async with self._db.reading(for_user=user_id) as conn:
            cursor = await conn.execute(
                "SELECT p.id FROM follows f JOIN posts p ON p.author_id = f.followee_id "
                "LEFT JOIN user_stats s ON s.user_id = f.followee_id "
                "WHERE f.follower_id = %s AND coalesce(s.follower_count, 0) < %s "
                "ORDER BY p.id DESC LIMIT %s",
                (user_id, self._settings.celebrity_threshold, self._settings.feed_max_length),
            )
            ids = [int(row[0]) for row in await cursor.fetchall()]
        await self._store(feed_key(user_id), ids)

    async def ensure_author_set(self, author_id: int) -> list[int]:
        """The author's recent post ids (rebuilding the set from Postgres when missing)."""
        key = author_key(author_id)
        cached = cast(list[bytes], await self._redis.zrevrangebyscore(key, "+inf", "(0"))
        if cached or await self._redis.exists(key):
            return [int(member) for member in cached]
        async with self._db.reading() as conn:
            cursor = await conn.execute(
                "SELECT id FROM posts WHERE author_id = %s ORDER BY id DESC LIMIT %s",
                (author_id, self._settings.feed_max_length),
            )
            ids = [int(row[0]) for row in await cursor.fetchall()]
        await self._store(key, ids)
        return ids

    async def _store(self, key: str, ids: Sequence[int]) -> None:
        members = {str(i): i for i in ids} or {_EMPTY_MARK: 0}
        await self._redis.zadd(key, members)
