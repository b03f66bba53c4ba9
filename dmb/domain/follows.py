"""The follow graph: idempotent follow/unfollow, paged lists, counts and celebrity status.

Counts live in `user_stats`, kept exact by a trigger in the same transaction as the follow row
(migration 0001). An account whose follower count reaches DMB_CELEBRITY_THRESHOLD is a celebrity:
the feed reads its posts at request time instead of fanning them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from dmb.domain.errors import InvalidArgument, NotFound
from dmb.domain.identity import Caller
from dmb.domain.paging import Page, next_cursor
from dmb.settings import Settings
from dmb.stores.postgres import AsyncConn, Database


@dataclass(frozen=True)
class FollowStats:
    follower_count: int
    following_count: int
    is_celebrity: bool


@dataclass(frozen=True)
class IdPage:
    ids: list[int]
    next_cursor: str


def _positive(user_id: int) -> None:
    if user_id <= 0:
        raise InvalidArgument("user_id must be a positive id")


async def user_exists(conn: AsyncConn, user_id: int) -> bool:
    cursor = await conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
    return await cursor.fetchone() is not None


async def celebrities_followed_by(db: Database, user_id: int, threshold: int) -> list[int]:
    """Accounts `user_id` follows whose follower count reaches `threshold` (fan-out on read)."""
    async with db.reading(for_user=user_id) as conn:
        return await celebrities_followed_on(conn, user_id, threshold)


async def celebrities_followed_on(conn: AsyncConn, user_id: int, threshold: int) -> list[int]:
    """celebrities_followed_by on a connection the caller already holds."""
    cursor = await conn.execute(
        "SELECT f.followee_id FROM follows f JOIN user_stats s ON s.user_id = f.followee_id "
        "WHERE f.follower_id = %s AND s.follower_count >= %s",
        (user_id, threshold),
    )
    return [int(row[0]) for row in await cursor.fetchall()]


async def follower_ids_page(
    db: Database, user_id: int, after_follow_id: int | None, limit: int
) -> list[tuple[int, int]]:
    """(follow id, follower id) pairs for fan-out, newest follow first, after a follow id."""
    async with db.reading() as conn:
        cursor = await conn.execute(
            "SELECT id, follower_id FROM follows WHERE followee_id = %s AND id < %s "
            "ORDER BY id DESC LIMIT %s",
            (user_id, after_follow_id or (1 << 62), limit),
        )
        return [(int(row[0]), int(row[1])) for row in await cursor.fetchall()]


class FollowGraph:
    """The follow service's domain logic, transport-free."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self._threshold = settings.celebrity_threshold
        self._db = db

    async def follow(self, caller: Caller, user_id: int) -> None:
        _positive(user_id)
        if user_id == caller.user_id:
            raise InvalidArgument("you cannot follow yourself")
        try:
            async with self._db.transaction() as conn:
                await conn.execute(
                    "INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (caller.user_id, user_id),
                )
                await self._db.remember_write(conn, caller.user_id)
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"user {user_id} does not exist") from None

    async def unfollow(self, caller: Caller, user_id: int) -> None:
        _positive(user_id)
        if user_id == caller.user_id:
            raise InvalidArgument("you cannot unfollow yourself")
        async with self._db.transaction() as conn:
            if not await user_exists(conn, user_id):
                raise NotFound(f"user {user_id} does not exist")
            await conn.execute(
                "DELETE FROM follows WHERE follower_id = %s AND followee_id = %s",
                (caller.user_id, user_id),
            )
            await self._db.remember_write(conn, caller.user_id)

    async def followers(self, caller: Caller, user_id: int, page: Page) -> IdPage:
        return await self._list(caller, user_id, page, "followee_id", "follower_id")

    async def following(self, caller: Caller, user_id: int, page: Page) -> IdPage:
        return await self._list(caller, user_id, page, "follower_id", "followee_id")

    async def stats(self, caller: Caller, user_id: int) -> FollowStats:
        _positive(user_id)
        async with self._db.reading(for_user=caller.user_id, known=caller.write_position) as conn:
            cursor = await conn.execute(
                "SELECT coalesce(s.follower_count, 0), coalesce(s.following_count, 0) "
                "FROM users u LEFT JOIN user_stats s ON s.user_id = u.id WHERE u.id = %s",
                (user_id,),
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        followers, following = int(row[0]), int(row[1])
        return FollowStats(followers, following, followers >= self._threshold)

    async def _list(
        self, caller: Caller, user_id: int, page: Page, owner_column: str, other_column: str
    ) -> IdPage:
        _positive(user_id)
        async with self._db.reading(for_user=caller.user_id, known=caller.write_position) as conn:
            if not await user_exists(conn, user_id):
                raise NotFound(f"user {user_id} does not exist")
            cursor = await conn.execute(
                f"SELECT id, {other_column} FROM follows "
                f"WHERE {owner_column} = %s AND id < %s ORDER BY id DESC LIMIT %s",
                (user_id, page.after or (1 << 62), page.size + 1),
            )
            rows = await cursor.fetchall()
        shown = rows[: page.size]
        return IdPage(
            ids=[int(row[1]) for row in shown],
            next_cursor=next_cursor([int(row[0]) for row in shown], page, len(rows)),
        )
