"""Home feeds in Redis sorted sets: fan-out writes, celebrity merge on read, cursor paging.

`feed:<user>` holds post ids (score = id, so newest first) written by fan-out on write and
trimmed to DMB_FEED_MAX_LENGTH. `posts:<author>` holds each author's recent posts: celebrities'
posts are read from there at request time instead of being fanned out. Either set is rebuilt
from Postgres when missing, so losing Redis loses no feed.

Writes only ever add to a set that exists. A write into a missing (evicted, flushed) set would
create it holding just the new post, and the next read would take that for the whole feed; so
the write is skipped and the rebuild brings the post along. A rebuild first puts the member "0"
into the set at score -1 ("being rebuilt"), then reads the primary, then adds what it read and
moves "0" to score 0 ("rebuilt"): a post committed before the read is in the read, and a fan-out
after the mark finds the set and writes. Reads only look at scores above 0, and an empty rebuilt
set keeps just the mark. A read that finds a set still being rebuilt takes it as missing and
rebuilds it too (rebuilds are idempotent): read as it stands, the set would hold only the posts
fanned out since the mark, and the page would come out empty or short.

Every set has a time to live (DMB_FEED_TTL_SECONDS), set by the rebuild and renewed by every
read (the read's EXPIRE also tells whether the set exists, in the same round trip); writes do
not renew it. So the feed of a user who stopped reading expires, and Redis memory follows the
active readers instead of growing with every account that ever read once. A rebuild writes to
Redis: when Redis refuses writes (out of memory) it fails, and the read answers 503.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from dmb.coalescing import Coalescer
from dmb.domain.follows import CelebrityRule
from dmb.domain.identity import Caller
from dmb.domain.paging import Page, encode_cursor
from dmb.domain.posts import Posts
from dmb.domain.relationships import hidden_from_feed
from dmb.stores.postgres import AsyncConn, Database, ReadPool
from dmb.stores.redis import LuaScript, run_pipeline
from dmb.v1 import resources_pb2

_MARK = "0"  # in every rebuilt set: at score -1 while the rebuild runs, then at 0
_REBUILDING = -1.0
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


class Window(NamedTuple):
    """A read of one sorted set: up to `limit` ids (None: all), newest first, below `upper`
    (a ZRANGE score bound: "+inf", or "(<id>" to continue below a cursor)."""

    key: str
    upper: str = "+inf"
    limit: int | None = None


async def read_windows(
    redis: aioredis.Redis, reads: Sequence[Window], ttl: int
) -> tuple[list[list[int]], list[int]]:
    """Each read's ids (scores above 0: the mark is skipped) and which reads found their key
    missing or still being rebuilt, from one pipeline that also renews each existing key's
    time to live to `ttl` seconds (EXPIRE answers whether the key exists; Redis allows it even
    when out of memory) and reads the mark's score."""
    async with redis.pipeline(transaction=False) as pipe:
        for read in reads:
            if read.limit is None:
                pipe.zrevrangebyscore(read.key, read.upper, "(0")
            else:
                pipe.zrevrangebyscore(read.key, read.upper, "(0", start=0, num=read.limit)
            pipe.expire(read.key, ttl)
            pipe.zscore(read.key, _MARK)
        replies = await pipe.execute()
    windows = [[int(member) for member in replies[3 * i]] for i in range(len(reads))]
    missing = [
        i for i in range(len(reads)) if not replies[3 * i + 1] or replies[3 * i + 2] == _REBUILDING
    ]
    return windows, missing


class SetRebuilder:
    """Rebuilds a lost sorted set from the primary: mark, read, add (the module docstring's
    order, which keeps a fan-out that races the rebuild from being lost and a read that races
    it from taking the half-built set for the whole)."""

    def __init__(self, db: Database, redis: aioredis.Redis, ttl_seconds: int) -> None:
        self._db = db
        self._redis = redis
        self.ttl_seconds = ttl_seconds

    async def rebuild(self, key: str, query: str, params: tuple[Any, ...]) -> list[int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            # Not over a set already rebuilt (its mark at 0), which a racing rebuild may have
            # finished since this one found the set missing: that one must keep reading whole.
            pipe.zadd(key, {_MARK: _REBUILDING}, nx=True)
            pipe.expire(key, self.ttl_seconds)
            await pipe.execute()
        async with self._db.reading(fresh=True) as conn:
            cursor = await conn.execute(query, params)
            ids = [int(row[0]) for row in await cursor.fetchall()]
        try:
            await self._redis.zadd(key, {**{str(i): i for i in ids}, _MARK: 0})
        except RedisError:
            # Refused half-way (out of memory): a set left marked would be rebuilt by every
            # read. Drop it (DEL is allowed under OOM) and fail.
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
            self._redis, [Window(author_key(author_id))], self._rebuilder.ttl_seconds
        )
        return await self.rebuild(author_id) if missing else cached


@dataclass(frozen=True)
class FeedPage:
    posts: list[resources_pb2.Post]
    next_cursor: str


@dataclass(frozen=True)
class _Reader:
    """What one reader's page needs from Postgres besides the posts."""

    celebrities: list[int]  # followed celebrities: their sets are merged in
    hidden: frozenset[int]  # authors the reader's home feed leaves out (blocks, mutes)


@dataclass(frozen=True)
class _SetRead:
    """One window a page reads, and how to rebuild its set when it is missing."""

    window: Window
    rebuild: Callable[[], Awaitable[object]]


# A page's posts before hydration (newest first) and whether more follow; or why it failed.
_Cut = tuple[list[int], bool] | BaseException


class HomeFeed:
    """GetHomeFeed: merge the fanned-out feed with followed celebrities' recent posts.

    Pages asked for at the same time are read together (dmb/coalescing.py, per read pool as
    read-your-writes picks it): one database connection for the batch, one query for every
    reader's celebrities and hidden accounts, one pipelined Redis round trip for every window
    of every page (each below its own cursor), and one hydration of all the pages' posts with
    the counters read beside it. Under load a replica thus pays those round trips once per
    batch instead of once per page; alone, a page costs what it did before batching. Sets found
    missing are rebuilt from Postgres (each once, however many pages share it) and read again;
    that only happens after an eviction or a Redis flush, and a rebuild that fails fails only
    the pages that needed that set.
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
        # One row per reader: the celebrities they follow and the authors hidden from them.
        self._readers_query = (
            f"SELECT r.id, ARRAY({celebrities.followed_by_query('r.id')}), "
            f"ARRAY{hidden_from_feed('r.id')} FROM unnest(%s::bigint[]) AS r(id)"
        )
        self._pages: Coalescer[ReadPool, tuple[int, Page], FeedPage] = Coalescer(
            self._read_pages, max_in_flight=2, max_batch=64
        )

    async def page(self, caller: Caller, page: Page) -> FeedPage:
        pool = await self._db.read_pool(caller.user_id)  # per caller: read-your-writes
        return await self._pages.submit(pool, (caller.user_id, page))

    async def open(self, user_id: int) -> bool:
        """Make sure the user's feed set exists, as their first read would (fan-out writes only
        reach feeds that exist): for warming feeds of active users. True when it was rebuilt."""
        ttl = self._rebuilder.ttl_seconds
        _, missing = await read_windows(self._redis, [Window(feed_key(user_id), limit=0)], ttl)
        if missing:
            await self._rebuild_feed(user_id)
        return bool(missing)

    async def _read_pages(
        self, pool: ReadPool, asks: list[tuple[int, Page]]
    ) -> list[FeedPage | BaseException]:
        """The pages of one batch; `asks` are (reader, page), a reader possibly twice."""
        async with self._db.reading_from(pool) as conn:
            readers = await self._readers(conn, {user for user, _ in asks})
            cuts = await self._cuts(
                [(page, self._reads(user, page, readers[user])) for user, page in asks]
            )
            wanted = {i for cut in cuts if not isinstance(cut, BaseException) for i in cut[0]}
            found = await self._posts.hydrate(conn, sorted(wanted, reverse=True))
        posts = {post.id: post for post in found}
        answers: list[FeedPage | BaseException] = []
        for (user, _), cut in zip(asks, cuts, strict=True):
            if isinstance(cut, BaseException):
                answers.append(cut)
                continue
            window, more = cut
            hidden = readers[user].hidden
            shown = [posts[i] for i in window if i in posts]
            visible = [p for p in shown if p.author_id != user and p.author_id not in hidden]
            answers.append(FeedPage(visible, encode_cursor(window[-1]) if more and window else ""))
        return answers

    async def _readers(self, conn: AsyncConn, users: set[int]) -> dict[int, _Reader]:
        cursor = await conn.execute(self._readers_query, (sorted(users),))
        return {
            int(user): _Reader([int(c) for c in celebrities], frozenset(int(h) for h in hidden))
            for user, celebrities, hidden in await cursor.fetchall()
        }

    def _reads(self, user: int, page: Page, reader: _Reader) -> list[_SetRead]:
        """A page's windows: the next `page.size + 1` ids below its cursor in the reader's
        feed set and in each followed celebrity's set."""
        upper = f"({page.after}" if page.after else "+inf"
        count = page.size + 1
        return [
            _SetRead(Window(feed_key(user), upper, count), partial(self._rebuild_feed, user)),
            *(
                _SetRead(Window(author_key(c), upper, count), partial(self._authors.rebuild, c))
                for c in reader.celebrities
            ),
        ]

    async def _cuts(self, pages: list[tuple[Page, list[_SetRead]]]) -> list[_Cut]:
        """Each page's newest `size` candidates from all its windows, read in one round trip."""
        reads = [read for _, page_reads in pages for read in page_reads]
        windows, failed = await self._read_sets(reads)
        cuts: list[_Cut] = []
        first = 0
        for page, page_reads in pages:
            own = range(first, first + len(page_reads))
            first += len(page_reads)
            error = next((failed[i] for i in own if i in failed), None)
            if error is not None:
                cuts.append(error)
                continue
            candidates = sorted({post_id for i in own for post_id in windows[i]}, reverse=True)
            cuts.append((candidates[: page.size], len(candidates) > page.size))
        return cuts

    async def _read_sets(
        self, reads: list[_SetRead]
    ) -> tuple[list[list[int]], dict[int, BaseException]]:
        """Every window in one round trip. Missing sets are rebuilt, each once, and read again;
        a rebuild's failure is returned for every read of that set."""
        ttl = self._rebuilder.ttl_seconds
        windows, missing = await read_windows(self._redis, [r.window for r in reads], ttl)
        if not missing:
            return windows, {}
        failures: dict[str, BaseException] = {}
        for key, read in {reads[i].window.key: reads[i] for i in missing}.items():
            try:
                await read.rebuild()
            except Exception as exc:  # Redis refused the rebuild (out of memory), Postgres down
                failures[key] = exc
        retried = [i for i in missing if reads[i].window.key not in failures]
        again, _ = await read_windows(self._redis, [reads[i].window for i in retried], ttl)
        for index, ids in zip(retried, again, strict=True):
            windows[index] = ids
        failed = {i: failures[reads[i].window.key] for i in missing if i not in retried}
        return windows, failed

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
