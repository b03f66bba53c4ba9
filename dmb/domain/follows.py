"""The follow graph: idempotent follow/unfollow, paged lists, counts and the celebrity rule.

Counts live in `user_stats`, kept exact by a trigger in the same transaction as the follow row
(migration 0001). An account whose follower count reaches DMB_CELEBRITY_THRESHOLD is a celebrity:
the feed reads its posts at request time instead of fanning them out (`CelebrityRule`, the one
place that rule is written).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import psycopg

from dmb.domain.identity import Caller
from dmb.domain.paging import Page, next_cursor
from dmb.domain.relationships import HIDDEN_BY_BLOCKS, lock_pair, refuse_if_blocked
from dmb.errors import InvalidArgument, NotFound
from dmb.ids import ABOVE_EVERY_ID
from dmb.stores.postgres import AsyncConn, Database


@dataclass(frozen=True)
class CelebrityRule:
    """At least `threshold` followers makes a celebrity: fan-out on read instead of on write.

    The rule is applied in SQL (`holds`), where the counts are: on the home-feed path it filters
    the followed accounts inside the query that finds them.
    """

    threshold: int

    def holds(self, follower_count: str) -> str:
        """A SQL condition on a follower-count expression (NULL: no stats row, no followers)."""
        return f"coalesce({follower_count}, 0) >= {int(self.threshold)}"

    def followed_by_query(self, follower: str) -> str:
        """The celebrities `follower` (a SQL expression) follows, as a query: their posts are
        merged into the follower's home feed at read time."""
        return (
            "SELECT f.followee_id FROM follows f JOIN user_stats s ON s.user_id = f.followee_id "
            f"WHERE f.follower_id = {follower} AND {self.holds('s.follower_count')}"
        )

    async def followed_by(self, conn: AsyncConn, user_id: int) -> list[int]:
        """The celebrities `user_id` follows."""
        cursor = await conn.execute(self.followed_by_query("%s"), (user_id,))
        return [int(row[0]) for row in await cursor.fetchall()]

    async def is_celebrity(self, conn: AsyncConn, user_id: int) -> bool:
        cursor = await conn.execute(
            f"SELECT {self.holds('follower_count')} FROM user_stats WHERE user_id = %s",
            (user_id,),
        )
        row = await cursor.fetchone()
        return bool(row and row[0])


@dataclass(frozen=True)
class FollowStats:
    follower_count: int
    following_count: int
    is_celebrity: bool


@dataclass(frozen=True)
class IdPage:
    ids: list[int]
    next_cursor: str


async def user_exists(conn: AsyncConn, user_id: int) -> bool:
    cursor = await conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
    return await cursor.fetchone() is not None


class FollowerBatches:
    """An author's followers in batches for fan-out, newest follow first, read from Postgres
    `batches_per_read` batches per query: a big author's fan-out starts on the first rows
    while the next ones are read, and no read holds more than that many rows."""

    def __init__(
        self,
        db: Database,
        batch_size: int,
        batches_per_read: int = 20,
        table: Literal["follows", "departed_followers"] = "follows",
    ) -> None:
        """`table`: `follows`, or `departed_followers` (the followers a deleted account had,
        same columns, read on the primary: they were written moments before the event)."""
        self._db = db
        self._size = batch_size
        self._rows = batch_size * batches_per_read
        self._query = (
            f"SELECT id, follower_id FROM {table} WHERE followee_id = %s AND id < %s "
            "ORDER BY id DESC LIMIT %s"
        )
        self._fresh = table != "follows"

    async def pages(self, author_id: int) -> AsyncIterator[list[list[int]]]:
        below = ABOVE_EVERY_ID
        while True:
            async with self._db.reading(fresh=self._fresh) as conn:
                cursor = await conn.execute(self._query, (author_id, below, self._rows))
                rows = [(int(row[0]), int(row[1])) for row in await cursor.fetchall()]
            if not rows:
                return
            followers = [follower for _, follower in rows]
            yield [followers[i : i + self._size] for i in range(0, len(followers), self._size)]
            if len(rows) < self._rows:
                return
            below = rows[-1][0]

    async def of(self, author_id: int) -> list[list[int]]:
        """Every batch at once (for a caller that wants them all before it acts)."""
        return [batch async for page in self.pages(author_id) for batch in page]


async def forget_departed_followers(db: Database, user_id: int) -> None:
    """Once a deleted account's posts left its followers' feeds, who they were is not kept."""
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM departed_followers WHERE followee_id = %s", (user_id,))


class FollowGraph:
    """The follow service's domain logic, transport-free."""

    def __init__(self, db: Database, celebrities: CelebrityRule) -> None:
        self._db = db
        self._celebrities = celebrities

    async def follow(self, caller: Caller, user_id: int) -> None:
        if user_id == caller.user_id:
            raise InvalidArgument("you cannot follow yourself")
        try:
            async with self._db.transaction() as conn:
                await lock_pair(conn, caller.user_id, user_id)  # a racing block waits, or wins
                await refuse_if_blocked(conn, caller.user_id, user_id)
                await conn.execute(
                    "INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (caller.user_id, user_id),
                )
                await self._db.remember_write(conn, caller.user_id)
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"user {user_id} does not exist") from None

    async def unfollow(self, caller: Caller, user_id: int) -> None:
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
        async with self._db.reading(for_user=caller.user_id) as conn:
            cursor = await conn.execute(
                "SELECT coalesce(s.follower_count, 0), coalesce(s.following_count, 0), "
                f"{self._celebrities.holds('s.follower_count')} "
                "FROM users u LEFT JOIN user_stats s ON s.user_id = u.id WHERE u.id = %s",
                (user_id,),
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        return FollowStats(int(row[0]), int(row[1]), bool(row[2]))

    async def _list(
        self, caller: Caller, user_id: int, page: Page, owner_column: str, other_column: str
    ) -> IdPage:
        async with self._db.reading(for_user=caller.user_id) as conn:
            if not await user_exists(conn, user_id):
                raise NotFound(f"user {user_id} does not exist")
            cursor = await conn.execute(
                f"SELECT id, {other_column} FROM follows "
                f"WHERE {owner_column} = %(user)s AND id < %(below)s "
                f"AND {other_column} NOT IN {HIDDEN_BY_BLOCKS} ORDER BY id DESC LIMIT %(limit)s",
                {
                    "user": user_id,
                    "below": page.below,
                    "limit": page.size + 1,
                    "reader": caller.user_id,
                },
            )
            rows = await cursor.fetchall()
        shown = rows[: page.size]
        return IdPage(
            ids=[int(row[1]) for row in shown],
            next_cursor=next_cursor([int(row[0]) for row in shown], page, len(rows)),
        )
