"""Posts, likes and comments: permissions, paged lists, batched hydration.

Field rules (content 1..2,000 characters and not blank, positive ids, batch sizes) are declared
in proto/dmb/v1/posts.proto and checked at the RPC boundary; the domain trims content and keeps
what needs the database (the post exists, the caller is its author).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from dmb.coalescing import Coalescer
from dmb.domain.counters import COMMENTS, LIKES, Counters, Counts
from dmb.domain.identity import Caller
from dmb.domain.mentions import record_mentions
from dmb.domain.paging import Page, next_cursor
from dmb.domain.relationships import (
    BLOCKED,
    HIDDEN_BY_BLOCKS,
    refuse_if_blocked,
)
from dmb.domain.timestamps import to_timestamp
from dmb.errors import NotFound, PermissionDenied
from dmb.stores.postgres import AsyncConn, Database, ReadPool
from dmb.v1 import resources_pb2

_POST_COLUMNS = "p.id, p.author_id, p.content, p.created_at, u.username, u.display_name"
# Newest-first pages of many authors' posts at once, each below its own cursor: a row per post
# (ask, then _POST_COLUMNS), or one row of NULL columns for an author with none on that page;
# an author that does not exist gets no row.
_TIMELINES = (
    f"SELECT q.ask, {_POST_COLUMNS} "
    "FROM unnest(%s::bigint[], %s::bigint[], %s::int[]) "
    "WITH ORDINALITY AS q(author, below, n, ask) "
    "JOIN users u ON u.id = q.author "
    "LEFT JOIN LATERAL (SELECT id, author_id, content, created_at FROM posts "
    "WHERE author_id = q.author AND id < q.below ORDER BY id DESC LIMIT q.n) p ON true "
    "ORDER BY q.ask, p.id DESC"
)
# The post %(post)s's author and %(reader)s are not in a block, either way.
_NOT_BLOCKED_BY_AUTHOR = (
    "NOT EXISTS (SELECT 1 FROM posts p JOIN blocks b ON "
    "(b.blocker_id = p.author_id AND b.blocked_id = %(reader)s) "
    "OR (b.blocker_id = %(reader)s AND b.blocked_id = p.author_id) WHERE p.id = %(post)s)"
)


@dataclass(frozen=True)
class PostPage:
    posts: list[resources_pb2.Post]
    next_cursor: str


@dataclass(frozen=True)
class CommentPage:
    comments: list[resources_pb2.Comment]
    next_cursor: str


def trimmed(content: str) -> str:
    """Content as stored: without leading and trailing whitespace (the .proto's rule guarantees
    something is left)."""
    return content.strip()


def post_message(row: Sequence[Any], counts: Counts) -> resources_pb2.Post:
    post_id, author_id, content, created_at, username, display_name = row
    return resources_pb2.Post(
        id=post_id,
        author_id=author_id,
        content=content,
        created_at=to_timestamp(created_at),
        like_count=counts.likes,
        comment_count=counts.comments,
        author_username=username or "",
        author_display_name=display_name or "",
    )


def comment_message(row: Sequence[Any]) -> resources_pb2.Comment:
    comment_id, post_id, author_id, content, created_at = row
    return resources_pb2.Comment(
        id=comment_id,
        post_id=post_id,
        author_id=author_id,
        content=content,
        created_at=to_timestamp(created_at),
    )


class Posts:
    """The post service's domain logic, transport-free."""

    def __init__(self, db: Database, counters: Counters) -> None:
        self._db = db
        self.counters = counters
        # Concurrent single-post reads (a coalesced Batch of GetPost runs many at once) leave
        # together: one `= ANY` query and one counters round trip per read pool.
        self._point_reads: Coalescer[ReadPool, int, resources_pb2.Post] = Coalescer(
            self._read_posts, max_in_flight=2, max_batch=256
        )
        # ... and concurrent timeline pages (GetUserPosts): one query and one counters read.
        self._timelines: Coalescer[ReadPool, tuple[int, Page], PostPage] = Coalescer(
            self._read_timelines, max_in_flight=2, max_batch=64
        )

    async def create(self, caller: Caller, content: str) -> resources_pb2.Post:
        text = trimmed(content)
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "WITH p AS (INSERT INTO posts (author_id, content) VALUES (%s, %s) "
                "RETURNING id, author_id, content, created_at) "
                f"SELECT {_POST_COLUMNS} FROM p JOIN users u ON u.id = p.author_id",
                (caller.user_id, text),
            )
            row = await cursor.fetchone()
            assert row is not None
            await record_mentions(conn, text, caller.user_id, int(row[0]))
            await self._db.remember_write(conn, caller.user_id)
        return post_message(row, Counts())

    async def get(self, caller: Caller, post_id: int) -> resources_pb2.Post:
        pool = await self._db.read_pool(caller.user_id)  # per caller: read-your-writes
        return await self._point_reads.submit(pool, post_id)

    async def _read_posts(
        self, pool: ReadPool, post_ids: list[int]
    ) -> list[resources_pb2.Post | BaseException]:
        async with self._db.reading_from(pool) as conn:
            found = {post.id: post for post in await self.hydrate(conn, sorted(set(post_ids)))}
        return [
            found[post_id] if post_id in found else NotFound(f"post {post_id} does not exist")
            for post_id in post_ids
        ]

    async def get_many(
        self, post_ids: Sequence[int], reader: Caller | None = None
    ) -> list[resources_pb2.Post]:
        """Posts in the order asked, deleted or unknown ones left out: one query, one Redis trip.

        The home feed hydrates its pages through this, so it must stay batched.
        """
        if not post_ids:
            return []
        async with self._db.reading(for_user=reader.user_id if reader else None) as conn:
            return await self.hydrate(conn, post_ids)

    async def hydrate(self, conn: AsyncConn, post_ids: Sequence[int]) -> list[resources_pb2.Post]:
        """get_many on a connection the caller holds: the rows query and the counters read run
        concurrently (counts of posts the query does not return are simply not used)."""
        ids = list(post_ids)
        if not ids:
            return []

        async def rows_by_id() -> dict[int, Any]:
            cursor = await conn.execute(
                f"SELECT {_POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.author_id "
                "WHERE p.id = ANY(%s)",
                (ids,),
            )
            return {int(row[0]): row for row in await cursor.fetchall()}

        rows, counts = await asyncio.gather(rows_by_id(), self.counters.get(ids))
        return [
            post_message(rows[post_id], counts.get(post_id, Counts()))
            for post_id in ids
            if post_id in rows
        ]

    async def delete(self, caller: Caller, post_id: int) -> None:
        async with self._db.transaction() as conn:
            cursor = await conn.execute("SELECT author_id FROM posts WHERE id = %s", (post_id,))
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"post {post_id} does not exist")
            if int(row[0]) != caller.user_id:
                raise PermissionDenied("only the author may delete a post")
            await conn.execute("DELETE FROM posts WHERE id = %s", (post_id,))
            await self._db.remember_write(conn, caller.user_id)
        await self.counters.forget(post_id)

    async def list_by_author(self, caller: Caller, user_id: int, page: Page) -> PostPage:
        pool = await self._db.read_pool(caller.user_id)  # per caller: read-your-writes
        return await self._timelines.submit(pool, (user_id, page))

    async def _read_timelines(
        self, pool: ReadPool, asks: list[tuple[int, Page]]
    ) -> list[PostPage | BaseException]:
        """Timeline pages of one batch, `asks` being (author, page): one query for all (an
        author that does not exist has no row), then one counters read for all."""
        authors, pages = [author for author, _ in asks], [page for _, page in asks]
        async with self._db.reading_from(pool) as conn:
            cursor = await conn.execute(
                _TIMELINES,
                (authors, [p.below for p in pages], [p.size + 1 for p in pages]),
            )
            found: dict[int, list[Any]] = {}
            for ask, *row in await cursor.fetchall():
                rows = found.setdefault(int(ask) - 1, [])  # ORDINALITY counts from 1
                if row[0] is not None:  # NULLs: the author has no post on this page
                    rows.append(row)
        shown = {i: rows[: pages[i].size] for i, rows in found.items()}
        counts = await self.counters.get([int(row[0]) for rows in shown.values() for row in rows])
        answers: list[PostPage | BaseException] = []
        for i, (author, page) in enumerate(asks):
            if i not in found:
                answers.append(NotFound(f"user {author} does not exist"))
                continue
            answers.append(
                PostPage(
                    posts=[post_message(r, counts.get(int(r[0]), Counts())) for r in shown[i]],
                    next_cursor=next_cursor([int(r[0]) for r in shown[i]], page, len(found[i])),
                )
            )
        return answers

    async def like(self, caller: Caller, post_id: int) -> int:
        try:
            async with self._db.transaction() as conn:
                cursor = await conn.execute(
                    "INSERT INTO likes (post_id, user_id) SELECT %(post)s, %(reader)s "
                    f"WHERE {_NOT_BLOCKED_BY_AUTHOR} ON CONFLICT DO NOTHING RETURNING 1",
                    {"post": post_id, "reader": caller.user_id},
                )
                changed = await cursor.fetchone() is not None
                if not changed:  # liked before, or a block between the two: tell which
                    await self._refuse_if_blocked(conn, caller, post_id)
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"post {post_id} does not exist") from None
        return await self._count_after(post_id, LIKES, 1 if changed else 0)

    async def unlike(self, caller: Caller, post_id: int) -> int:
        async with self._db.transaction() as conn:
            await self._require_post(conn, post_id)
            cursor = await conn.execute(
                "DELETE FROM likes WHERE post_id = %s AND user_id = %s RETURNING 1",
                (post_id, caller.user_id),
            )
            changed = await cursor.fetchone() is not None
        return await self._count_after(post_id, LIKES, -1 if changed else 0)

    async def add_comment(
        self, caller: Caller, post_id: int, content: str
    ) -> resources_pb2.Comment:
        text = trimmed(content)
        try:
            async with self._db.transaction() as conn:
                cursor = await conn.execute(
                    "INSERT INTO comments (post_id, author_id, content) "
                    "SELECT %(post)s, %(reader)s, %(text)s "
                    f"WHERE {_NOT_BLOCKED_BY_AUTHOR} "
                    "RETURNING id, post_id, author_id, content, created_at",
                    {"post": post_id, "reader": caller.user_id, "text": text},
                )
                row = await cursor.fetchone()
                if row is None:  # the post exists (else a foreign-key error): a block
                    raise PermissionDenied(BLOCKED)
                await record_mentions(conn, text, caller.user_id, post_id, int(row[0]))
                await self._db.remember_write(conn, caller.user_id)
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"post {post_id} does not exist") from None
        await self.counters.changed(post_id, COMMENTS, 1)
        return comment_message(row)

    async def list_comments(self, caller: Caller, post_id: int, page: Page) -> CommentPage:
        async with self._db.reading(for_user=caller.user_id) as conn:
            await self._require_post(conn, post_id)
            cursor = await conn.execute(
                "SELECT id, post_id, author_id, content, created_at FROM comments "
                "WHERE post_id = %(post)s AND id > %(above)s "
                f"AND author_id NOT IN {HIDDEN_BY_BLOCKS} ORDER BY id LIMIT %(limit)s",
                {
                    "post": post_id,
                    "above": page.above,
                    "limit": page.size + 1,
                    "reader": caller.user_id,
                },
            )
            rows = await cursor.fetchall()
        shown = rows[: page.size]
        return CommentPage(
            comments=[comment_message(row) for row in shown],
            next_cursor=next_cursor([int(row[0]) for row in shown], page, len(rows)),
        )

    async def delete_comment(self, caller: Caller, post_id: int, comment_id: int) -> None:
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "SELECT c.author_id, p.author_id FROM comments c JOIN posts p ON p.id = c.post_id "
                "WHERE c.id = %s AND c.post_id = %s",
                (comment_id, post_id),
            )
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"comment {comment_id} on post {post_id} does not exist")
            if caller.user_id not in (int(row[0]), int(row[1])):
                raise PermissionDenied("only the comment's or the post's author may delete it")
            await conn.execute("DELETE FROM comments WHERE id = %s", (comment_id,))
        await self.counters.changed(post_id, COMMENTS, -1)

    async def _refuse_if_blocked(self, conn: AsyncConn, caller: Caller, post_id: int) -> None:
        cursor = await conn.execute("SELECT author_id FROM posts WHERE id = %s", (post_id,))
        row = await cursor.fetchone()
        if row is not None:
            await refuse_if_blocked(conn, caller.user_id, int(row[0]))

    async def _require_post(self, conn: AsyncConn, post_id: int) -> None:
        cursor = await conn.execute("SELECT 1 FROM posts WHERE id = %s", (post_id,))
        if await cursor.fetchone() is None:
            raise NotFound(f"post {post_id} does not exist")

    async def _count_after(self, post_id: int, field: str, delta: int) -> int:
        if delta:
            return await self.counters.changed(post_id, field, delta)
        counts = (await self.counters.get([post_id])).get(post_id, Counts())
        return counts.likes if field == LIKES else counts.comments
