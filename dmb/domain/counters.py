"""Like and comment counters: Redis for fast reads, Postgres rows as the truth.

Each post has one Redis hash `dmb:counts:{<post id>}` with fields `likes` and `comments`. A like
or comment that really changed a row marks the post dirty, then increments the hash if it exists.
A missing hash (evicted, Redis flushed) is rebuilt by counting the rows in Postgres, so losing
Redis loses nothing. The flusher writes dirty posts' counts to `posts.like_count/comment_count`
in one batched statement, recounting from the rows (not copying Redis), and refreshes Redis with
the exact values, so any drift from races heals at the next flush.

The dirty marks live in Redis, so a Redis that loses its data (a restart without persistence, a
failover to an empty replica, FLUSHALL) takes with it the marks of posts changed since the last
flush, and their columns would stay stale until each post's next change. The flusher keeps a
marker key beside the marks; when it finds the marker gone, it recounts every post's columns
once (in id order, in batches, writing only those that differ), then goes on as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dmb.stores.postgres import Database
from dmb.stores.redis import LuaScript, store_refusal

DIRTY = "dmb:{counts}:dirty"
FLUSHING = "dmb:{counts}:flushing"  # same hash tag as DIRTY: one slot on Redis Cluster
ALIVE = "dmb:{counts}:alive"  # present while Redis still holds every dirty mark it was given
TTL_SECONDS = 7 * 86_400
LIKES = "likes"
COMMENTS = "comments"

_INCREMENT_IF_PRESENT = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
end
return false
""")
_TAKE_DIRTY = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1])
  redis.call('DEL', KEYS[1])
end
return redis.call('SMEMBERS', KEYS[2])
""")
_RECOUNT_SQL = (
    "SELECT p.id, "
    "(SELECT count(*) FROM likes l WHERE l.post_id = p.id), "
    "(SELECT count(*) FROM comments c WHERE c.post_id = p.id) "
    "FROM posts p WHERE p.id = ANY(%s)"
)
_WRITE_COUNTS_SQL = (
    f"UPDATE posts p SET like_count = c.likes, comment_count = c.comments "
    f"FROM ({_RECOUNT_SQL}) AS c(id, likes, comments) WHERE p.id = c.id"
)


def counts_key(post_id: int) -> str:
    return f"dmb:counts:{{{post_id}}}"


@dataclass(frozen=True)
class Counts:
    likes: int = 0
    comments: int = 0


class Counters:
    def __init__(
        self,
        db: Database,
        redis: aioredis.Redis,
        dirty_key: str = DIRTY,
        flushing_key: str = FLUSHING,
        alive_key: str = ALIVE,
    ) -> None:
        self._db = db
        self._redis = redis
        self._dirty = dirty_key
        self._flushing = flushing_key
        self._alive = alive_key

    async def changed(self, post_id: int, field: str, delta: int) -> int:
        """Record a committed change of `delta` likes/comments; return the new count."""
        try:
            await self._redis.sadd(self._dirty, str(post_id))  # first: the flusher must see it
            value = await _INCREMENT_IF_PRESENT.run(
                self._redis, [counts_key(post_id)], [field, delta]
            )
        except RedisError as exc:
            if store_refusal(exc) is None:
                raise
            # Out of memory (or down) after the row committed: the cached hash now misses this
            # change. Drop it (DEL is allowed under OOM) so the next read recounts the rows, and
            # answer the exact count from the rows: the write happened, and a 503 would make
            # clients retry it (a second comment). Only the dirty mark is lost: the posts
            # columns catch up at the post's next change.
            with contextlib.suppress(RedisError):
                await self._redis.delete(counts_key(post_id))
            counts = (await self._recount([post_id])).get(post_id, Counts())
            return counts.likes if field == LIKES else counts.comments
        if value is not None:
            return int(value)
        rebuilt = await self.get([post_id])
        counts = rebuilt.get(post_id, Counts())
        return counts.likes if field == LIKES else counts.comments

    async def get(self, post_ids: Sequence[int]) -> dict[int, Counts]:
        """Counts for existing posts (one pipelined read; missing hashes rebuilt in one query)."""
        if not post_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for post_id in post_ids:
                pipe.hmget(counts_key(post_id), [LIKES, COMMENTS])
            cached = await pipe.execute()
        found: dict[int, Counts] = {}
        missing = []
        for post_id, (likes, comments) in zip(post_ids, cached, strict=True):
            if likes is None or comments is None:
                missing.append(post_id)
            else:
                found[post_id] = Counts(int(likes), int(comments))
        if missing:
            found.update(await self._rebuild(missing))
        return found

    async def forget(self, post_id: int) -> None:
        await self._redis.delete(counts_key(post_id))

    async def recount_later(self, post_ids: Sequence[int]) -> None:
        """For rows changed without `changed` (an account deletion takes its likes and comments
        with it): mark the posts dirty, so the flusher recounts them into Postgres and Redis,
        and drop their cached hashes, so reads recount meanwhile. Call it before the change
        commits (Redis down: nothing changes) and `forget_many` again after it (a read between
        the two may have cached the old count)."""
        if not post_ids:
            return
        await self._redis.sadd(self._dirty, *[str(p) for p in post_ids])
        await self.forget_many(post_ids)

    async def forget_many(self, post_ids: Sequence[int]) -> None:
        """One pipelined DEL per hash (each has a slot of its own on Redis Cluster)."""
        if not post_ids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for post_id in post_ids:
                pipe.delete(counts_key(post_id))
            await pipe.execute()

    async def flush(self, batch_size: int = 1000) -> int:
        """Write dirty posts' exact counts to Postgres; return how many posts were written.

        Dirty ids move to a `flushing` set first and leave it only after the UPDATE committed,
        so a flusher that dies mid-way loses nothing: the next run picks the set up again. When
        the marker key is missing, Redis has lost the marks themselves: every post is recounted.
        """
        lost = bool(await self._redis.set(self._alive, "1", nx=True))  # lost its data, or new
        try:
            written = await self._flush_dirty(batch_size)
            if lost:
                written += await self.recount_all(batch_size)
        except BaseException:
            if lost:  # not done: leave the marker missing, so that the next flush starts over
                with contextlib.suppress(RedisError):
                    await self._redis.delete(self._alive)
            raise
        return written

    async def _flush_dirty(self, batch_size: int) -> int:
        written = 0
        members = await _TAKE_DIRTY.run(self._redis, [self._dirty, self._flushing], [])
        post_ids = sorted(int(m) for m in members)
        for start in range(0, len(post_ids), batch_size):
            chunk = post_ids[start : start + batch_size]
            async with self._db.transaction() as conn:
                cursor = await conn.execute(
                    f"{_WRITE_COUNTS_SQL} RETURNING p.id, p.like_count, p.comment_count", (chunk,)
                )
                rows = await cursor.fetchall()
            await self._store([(int(r[0]), Counts(int(r[1]), int(r[2]))) for r in rows])
            await self._redis.srem(self._flushing, *[str(i) for i in chunk])
            written += len(rows)
        return written

    async def recount_all(self, batch_size: int = 1000) -> int:
        """Recount every post's columns from its rows, `batch_size` posts per statement in id
        order, writing only those that differ; return how many did. After Redis lost its dirty
        marks nothing else says which posts changed since the last flush. A marker set before
        the recount began means a change committed during it marks its post dirty as usual."""
        after, fixed = 0, 0
        while True:
            async with self._db.transaction() as conn:
                cursor = await conn.execute(
                    "SELECT id FROM posts WHERE id > %s ORDER BY id LIMIT %s", (after, batch_size)
                )
                ids = [int(row[0]) for row in await cursor.fetchall()]
                if not ids:
                    return fixed
                cursor = await conn.execute(
                    f"{_WRITE_COUNTS_SQL} AND (p.like_count, p.comment_count) "
                    "IS DISTINCT FROM (c.likes, c.comments) RETURNING p.id",
                    (ids,),
                )
                fixed += len(await cursor.fetchall())
            after = ids[-1]

    async def _rebuild(self, post_ids: Sequence[int]) -> dict[int, Counts]:
        """Recount from the primary: a rebuild often follows the very like or comment that was
        just committed, which a lagging replica would miss, and the result is cached."""
        counts = await self._recount(post_ids)
        await self._store(list(counts.items()), only_if_missing=True)
        return counts

    async def _recount(self, post_ids: Sequence[int]) -> dict[int, Counts]:
        async with self._db.reading(fresh=True) as conn:
            cursor = await conn.execute(_RECOUNT_SQL, (list(post_ids),))
            rows = await cursor.fetchall()
        return {int(r[0]): Counts(int(r[1]), int(r[2])) for r in rows}

    async def _store(self, counts: list[tuple[int, Counts]], only_if_missing: bool = False) -> None:
        if not counts:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for post_id, value in counts:
                key = counts_key(post_id)
                if only_if_missing:  # a concurrent increment may already have rebuilt it
                    pipe.hsetnx(key, LIKES, value.likes)
                    pipe.hsetnx(key, COMMENTS, value.comments)
                else:
                    pipe.hset(key, mapping={LIKES: value.likes, COMMENTS: value.comments})
                pipe.expire(key, TTL_SECONDS)
            await pipe.execute()
