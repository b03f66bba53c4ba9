"""Blocks and mutes between accounts (migration 0007), and the SQL that honours them.

A block works both ways, as on Mastodon and Bluesky: neither account sees the other in home
feeds, follower and following lists, comments or search, and the blocked one can no longer
follow the blocker or like or comment on the blocker's posts. Making a block removes the follows
between the two; their deletions flow through CDC like any unfollow, which takes each one's
posts out of the other's fanned-out feed. Reads filter as well (`HIDDEN_BY_BLOCKS`), so nothing
shows in the moments before the pipeline catches up, nor for celebrity posts merged at read
time. A mute is one-way and quieter: the muted account's posts leave the muter's home feed
only (filtered at read time, so unmuting brings them back at once), and nothing else changes.

Follows and blocks of the same two accounts take one transaction-level lock on the pair, so a
follow racing a block either sees the block or is removed by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dmb.domain.identity import Caller
from dmb.domain.paging import Page, next_cursor
from dmb.errors import InvalidArgument, NotFound, PermissionDenied
from dmb.stores.postgres import AsyncConn, Database

# Accounts in a block with %(reader)s, either way: a subquery for `NOT IN`.
HIDDEN_BY_BLOCKS = (
    "(SELECT blocked_id FROM blocks WHERE blocker_id = %(reader)s "
    "UNION ALL SELECT blocker_id FROM blocks WHERE blocked_id = %(reader)s)"
)


def hidden_from_feed(reader: str) -> str:
    """The accounts in a block with `reader` (a SQL expression), either way, and the accounts
    `reader` muted: what the reader's home feed leaves out, as a subquery."""
    return (
        f"(SELECT blocked_id FROM blocks WHERE blocker_id = {reader} "
        f"UNION ALL SELECT blocker_id FROM blocks WHERE blocked_id = {reader} "
        f"UNION ALL SELECT muted_id FROM mutes WHERE muter_id = {reader})"
    )


HIDDEN_FROM_FEED = hidden_from_feed("%(reader)s")  # for `NOT IN`, with the reader a parameter
BLOCKED = "this account has blocked you, or you have blocked it"


@dataclass(frozen=True)
class AccountPage:
    ids: list[int]
    next_cursor: str


async def lock_pair(conn: AsyncConn, a: int, b: int) -> None:
    """Serialise follows and blocks between `a` and `b` until the transaction ends."""
    low, high = min(a, b), max(a, b)
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('dmb.pair:' || %s || ':' || %s, 0))",
        (low, high),
    )


async def blocked_either_way(conn: AsyncConn, a: int, b: int) -> bool:
    cursor = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM blocks WHERE (blocker_id = %(a)s AND blocked_id = %(b)s) "
        "OR (blocker_id = %(b)s AND blocked_id = %(a)s))",
        {"a": a, "b": b},
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def refuse_if_blocked(conn: AsyncConn, a: int, b: int) -> None:
    """PermissionDenied when `a` and `b` are in a block, either way."""
    if await blocked_either_way(conn, a, b):
        raise PermissionDenied(BLOCKED)


class Relationships:
    """Block, unblock, mute, unmute, and the caller's lists of each."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def block(self, caller: Caller, user_id: int) -> None:
        """Idempotent. Removes the follows between the two, both ways."""
        me = self._other_than_me(caller, user_id, "block")
        async with self._db.transaction() as conn:
            await self._require_user(conn, user_id)
            await lock_pair(conn, me, user_id)
            await conn.execute(
                "INSERT INTO blocks (blocker_id, blocked_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (me, user_id),
            )
            await conn.execute(
                "DELETE FROM follows WHERE (follower_id = %(a)s AND followee_id = %(b)s) "
                "OR (follower_id = %(b)s AND followee_id = %(a)s)",
                {"a": me, "b": user_id},
            )
            await self._db.remember_write(conn, me)

    async def unblock(self, caller: Caller, user_id: int) -> None:
        """Idempotent; the follows the block removed stay removed."""
        await self._remove(caller, user_id, "blocks", "blocker_id", "blocked_id", "unblock")

    async def mute(self, caller: Caller, user_id: int) -> None:
        me = self._other_than_me(caller, user_id, "mute")
        async with self._db.transaction() as conn:
            await self._require_user(conn, user_id)
            await conn.execute(
                "INSERT INTO mutes (muter_id, muted_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (me, user_id),
            )
            await self._db.remember_write(conn, me)

    async def unmute(self, caller: Caller, user_id: int) -> None:
        await self._remove(caller, user_id, "mutes", "muter_id", "muted_id", "unmute")

    async def blocks(self, caller: Caller, page: Page) -> AccountPage:
        """Accounts the caller blocked, newest block first."""
        return await self._list(caller, page, "blocks", "blocker_id", "blocked_id")

    async def mutes(self, caller: Caller, page: Page) -> AccountPage:
        return await self._list(caller, page, "mutes", "muter_id", "muted_id")

    def _other_than_me(self, caller: Caller, user_id: int, verb: str) -> int:
        if user_id == caller.user_id:
            raise InvalidArgument(f"you cannot {verb} yourself")
        return caller.user_id

    async def _require_user(self, conn: AsyncConn, user_id: int) -> None:
        cursor = await conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
        if await cursor.fetchone() is None:
            raise NotFound(f"user {user_id} does not exist")

    async def _remove(
        self, caller: Caller, user_id: int, table: str, owner: str, other: str, verb: str
    ) -> None:
        me = self._other_than_me(caller, user_id, verb)
        async with self._db.transaction() as conn:
            await self._require_user(conn, user_id)
            await conn.execute(
                f"DELETE FROM {table} WHERE {owner} = %s AND {other} = %s",
                (me, user_id),
            )
            await self._db.remember_write(conn, me)

    async def _list(
        self, caller: Caller, page: Page, table: str, owner: str, other: str
    ) -> AccountPage:
        async with self._db.reading(for_user=caller.user_id) as conn:
            cursor = await conn.execute(
                f"SELECT id, {other} FROM {table} WHERE {owner} = %s AND id < %s "
                "ORDER BY id DESC LIMIT %s",
                (caller.user_id, page.below, page.size + 1),
            )
            rows = await cursor.fetchall()
        shown = rows[: page.size]
        return AccountPage(
            ids=[int(row[1]) for row in shown],
            next_cursor=next_cursor([int(row[0]) for row in shown], page, len(rows)),
        )
