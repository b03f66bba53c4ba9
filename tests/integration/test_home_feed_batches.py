"""Home-feed pages asked for at the same time are read as one batch, against the real stores.

What a coalesced Batch of GetHomeFeed does in a FeedService replica: many readers' pages at once,
each with its own cursor, celebrities merged at read time, blocks and mutes, sets rebuilt from
Postgres. Each reader must get exactly the page it gets alone, and the batch must share its
reads (one hydration for many pages) - the reason it exists.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from redis.exceptions import RedisError

from dmb.composition import Components
from dmb.domain.feed import FeedPage, author_key, feed_key
from dmb.domain.paging import Page, decode_cursor
from dmb.settings import Settings
from dmb.stores import read_your_writes
from dmb.stores.read_your_writes import WritePosition
from tests.integration.helpers import as_caller, follow_in_bulk, make_celebrity, make_users

THRESHOLD = 4  # y: 3 readers + 4 fans; x has 3 followers, z 2
Ask = tuple[int, Page]


@pytest.fixture
def graph(database_url: str) -> dict[str, Any]:
    """Readers a, b, c, d; authors x and z (fanned out) and y (a celebrity), 5 posts each,
    interleaved. a mutes z; x blocks b; c blocks y. d follows only x."""
    a, b, c, d, x, y, z = make_users(database_url, 7)
    follow_in_bulk(database_url, [a, b, d], x)
    follow_in_bulk(database_url, [a, b, c], y)
    follow_in_bulk(database_url, [a, c], z)
    make_celebrity(database_url, THRESHOLD, y)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO mutes (muter_id, muted_id) VALUES (%s, %s)", (a, z))
        conn.execute(
            "INSERT INTO blocks (blocker_id, blocked_id) VALUES (%s, %s), (%s, %s)", (x, b, c, y)
        )
        posts: dict[int, list[int]] = {x: [], y: [], z: []}
        for n in range(5):
            for author in (x, y, z):
                row = conn.execute(
                    "INSERT INTO posts (author_id, content) VALUES (%s, %s) RETURNING id",
                    (author, f"post {n}"),
                ).fetchone()
                assert row is not None
                posts[author].insert(0, int(row[0]))
    return {"readers": (a, b, c, d), "authors": (x, y, z), "posts": posts}


def _newest_first(*lists: list[int]) -> list[int]:
    return sorted({post_id for ids in lists for post_id in ids}, reverse=True)


def _asks(readers: tuple[int, ...], size: int, after: dict[int, int]) -> list[Ask]:
    """Every reader's first page, then each again below the given cursor, and a's first page
    twice (one reader twice in a batch)."""
    first = [(user, Page(size, None)) for user in readers]
    return [*first, *((user, Page(size, after[user])) for user in readers), first[0]]


async def _page(components: Components, user: int, page: Page) -> FeedPage:
    with read_your_writes.known(WritePosition(user, None)):  # as the RPC boundary sets it
        return await components.home_feed.page(as_caller(user), page)


async def _pages(components: Components, asks: list[Ask], together: bool) -> list[Any]:
    if together:
        reads = (_page(components, *ask) for ask in asks)
        return await asyncio.gather(*reads, return_exceptions=True)
    return [await _page(components, *ask) for ask in asks]


def _counting_hydrations(components: Components) -> list[int]:
    """A spy on the posts' hydration (the real read runs): how many posts each call asked for."""
    calls: list[int] = []
    hydrate = components.posts.hydrate

    async def counted(conn: Any, post_ids: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(post_ids))
        return await hydrate(conn, post_ids, *args, **kwargs)

    components.posts.hydrate = counted  # type: ignore[method-assign]
    return calls


def test_pages_read_together_are_the_pages_read_alone_and_share_one_hydration(
    settings: Settings, graph: dict[str, Any]
) -> None:
    a, b, c, d = graph["readers"]
    x, y, z = graph["authors"]
    posts = graph["posts"]
    # What each reader follows, newest first, and what their home feed leaves out: a page is
    # the next 4 of the first list, less those of the second (a page can come out shorter).
    followed = {
        a: _newest_first(posts[x], posts[y], posts[z]),
        b: _newest_first(posts[x], posts[y]),
        c: _newest_first(posts[y], posts[z]),
        d: _newest_first(posts[x]),
    }
    hidden = {a: set(posts[z]), b: set(posts[x]), c: set(posts[y]), d: set()}  # mute, blocks

    def expected(user: int, after: int | None) -> list[int]:
        below = [i for i in followed[user] if after is None or i < after][:4]
        return [i for i in below if i not in hidden[user]]

    # Primary only: this is about batching, not replica lag (tested elsewhere).
    primary = settings.with_overrides(
        {"celebrity_threshold": THRESHOLD, "database_replica_url": None}
    )

    async def scenario() -> tuple[list[Any], list[Any], list[int], list[int]]:
        components = Components(primary)
        await components.ready()
        try:
            redis = components.stores.redis
            await redis.delete(*(feed_key(r) for r in graph["readers"]), author_key(y))
            after = {user: followed[user][2] for user in graph["readers"]}
            asks = _asks(graph["readers"], 4, after)
            calls = _counting_hydrations(components)
            together = await _pages(components, asks, together=True)  # the sets rebuild here
            batched = list(calls)
            calls.clear()
            alone = await _pages(components, asks, together=False)
            return together, alone, batched, list(calls)
        finally:
            await components.close()

    together, alone, batched, one_each = asyncio.run(scenario())
    for page in together:
        assert isinstance(page, FeedPage), page
    assert [[p.id for p in page.posts] for page in together] == [
        [p.id for p in page.posts] for page in alone
    ]
    assert [page.next_cursor for page in together] == [page.next_cursor for page in alone]
    readers = graph["readers"]
    for index, user in enumerate(readers):
        first, below = together[index], together[index + len(readers)]
        assert [p.id for p in first.posts] == expected(user, None), user
        assert [p.id for p in below.posts] == expected(user, followed[user][2]), user
        assert decode_cursor(first.next_cursor) == followed[user][3]
    assert {p.author_id for p in together[0].posts} == {x, y}  # a: both, z muted
    assert len(one_each) == len(alone)  # one hydration per page read alone ...
    # ... and at most two batches in flight: two pages alone, then the other seven together.
    assert len(batched) == 3


def test_a_rebuild_that_fails_fails_only_the_pages_that_need_its_set(
    settings: Settings, graph: dict[str, Any]
) -> None:
    a, b, c, d = graph["readers"]
    x, y, _ = graph["authors"]
    primary = settings.with_overrides(
        {"celebrity_threshold": THRESHOLD, "database_replica_url": None}
    )

    async def scenario() -> list[Any]:
        components = Components(primary)
        await components.ready()
        authors = components.author_posts
        rebuild = authors.rebuild

        async def refused(author_id: int) -> list[int]:
            if author_id == y:  # Redis refusing the celebrity's rebuild (out of memory)
                raise RedisError("OOM command not allowed when used memory > 'maxmemory'")
            return await rebuild(author_id)

        authors.rebuild = refused  # type: ignore[method-assign]
        try:
            await components.stores.redis.delete(author_key(y))
            asks = [(user, Page(4, None)) for user in (a, b, c, d)] * 3
            return await _pages(components, asks, together=True)
        finally:
            await components.close()

    pages = asyncio.run(scenario())
    for (user, _), page in zip([(u, 0) for u in (a, b, c, d)] * 3, pages, strict=True):
        if user == d:  # follows no celebrity: its page needs no rebuild of y's set
            assert isinstance(page, FeedPage)
            assert [p.id for p in page.posts] == graph["posts"][x][:4]
        else:
            assert isinstance(page, RedisError), (user, page)


def test_a_page_read_while_another_read_rebuilds_the_feed_is_the_whole_page(
    settings: Settings, graph: dict[str, Any], database_url: str
) -> None:
    """The first read of a missing feed rebuilds it; a second read meanwhile must not take the
    half-built set (the mark alone) for an empty feed. The rebuild is held mid-way, between
    its mark and its read of the primary, by a lock on the posts table."""
    d = graph["readers"][3]
    x = graph["authors"][0]
    primary = settings.with_overrides(
        {"celebrity_threshold": THRESHOLD, "database_replica_url": None}
    )

    def rebuilds_waiting(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%%JOIN posts p ON p.author_id = f.followee_id%%'"
        ).fetchone()
        return int(row[0]) if row else 0

    async def scenario() -> tuple[FeedPage, FeedPage | BaseException]:
        components = Components(primary)
        await components.ready()
        try:
            await components.stores.redis.delete(feed_key(d))
            with (
                psycopg.connect(database_url) as lock,
                psycopg.connect(database_url, autocommit=True) as watch,
            ):
                lock.execute("LOCK TABLE posts IN ACCESS EXCLUSIVE MODE")
                first = asyncio.ensure_future(_page(components, d, Page(4, None)))
                while rebuilds_waiting(watch) < 1:
                    await asyncio.sleep(0.01)
                second = asyncio.ensure_future(_page(components, d, Page(4, None)))
                while not second.done() and rebuilds_waiting(watch) < 2:
                    await asyncio.sleep(0.01)
                lock.rollback()  # the rebuilds go on
            return await first, (await asyncio.gather(second, return_exceptions=True))[0]
        finally:
            await components.close()

    first, second = asyncio.run(scenario())
    assert [p.id for p in first.posts] == graph["posts"][x][:4]
    assert isinstance(second, FeedPage)
    assert [p.id for p in second.posts] == [p.id for p in first.posts]
