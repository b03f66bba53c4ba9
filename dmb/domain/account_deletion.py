"""Deleting an account (`DELETE /v1/users/me`): everything of it goes, at once or through the
pipeline, and nothing it leaves behind can be used.

In one transaction, after the password is checked again (a stolen access token alone cannot
close an account):
- its likes and comments go, and the posts they counted are marked for a recount (the
  counters stay exact: see `Counters.recount_later`);
- who followed it is copied to `departed_followers`, and a row goes into `account_deletions`
  with its newest posts (migration 0006);
- the `users` row goes, and with it (ON DELETE CASCADE) its posts, the likes and comments on
  them, its follows both ways (the follows trigger keeps everyone's counts exact) and its
  refresh tokens.
Afterwards the feed pipeline takes its posts out of every home feed: the `account_deletions`
row is captured from the WAL like any post, and the feed consumer fans the posts out of the
departed followers' feeds (dmb.domain.feed_events). Every access token of the account is
refused at once (dmb.domain.revocation reads `account_deletions`), and its username stays
taken for DMB_USERNAME_HOLD_SECONDS (dmb.domain.username_hold).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from dmb.domain.counters import Counters
from dmb.domain.identity import Caller
from dmb.domain.login_guard import LoginGuard
from dmb.domain.revocation import Revocations
from dmb.domain.username_hold import lock_username
from dmb.domain.users import verify_password
from dmb.errors import NotFound, PermissionDenied
from dmb.settings import Settings
from dmb.stores.postgres import AsyncConn, Database

log = logging.getLogger("dmb.account_deletion")
WRONG_PASSWORD = "wrong password"  # noqa: S105 - an error message, not a secret


class AccountDeletion:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        counters: Counters,
        revocations: Revocations,
        guard: LoginGuard,
    ) -> None:
        self._db = db
        self._counters = counters
        self._revocations = revocations
        self._guard = guard
        self._hold_seconds = settings.username_hold_seconds
        self._newest_posts = settings.feed_max_length

    async def delete(self, caller: Caller, password: str) -> None:
        """Delete the caller's account; PermissionDenied for a wrong password (nothing
        changes), TooManyAttempts once too many were wrong."""
        username, stored_hash = await self._credentials(caller.user_id)
        await self._guard.check(username)
        if not await asyncio.to_thread(verify_password, stored_hash, password):
            raise await self._guard.failed(username) or PermissionDenied(WRONG_PASSWORD)
        await self._guard.succeeded(username)
        async with self._db.transaction() as conn:
            counted = await self._close(conn, caller.user_id, username)
            # Before the commit: with Redis unavailable this raises and nothing is deleted.
            await self._counters.recount_later(counted)
        await self._revocations.cache_account_closed(caller.user_id)
        with contextlib.suppress(RedisError):  # the flusher recounts them anyway
            await self._counters.forget_many(counted)
        log.info("account %d deleted (%d posts recounted)", caller.user_id, len(counted))

    async def _credentials(self, user_id: int) -> tuple[str, str]:
        async with self._db.reading(fresh=True) as conn:
            cursor = await conn.execute(
                "SELECT username, password_hash FROM users WHERE id = %s", (user_id,)
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        return str(row[0]), str(row[1])

    async def _close(self, conn: AsyncConn, user_id: int, username: str) -> list[int]:
        """The deletion itself; returns the other accounts' posts whose counts changed."""
        cursor = await conn.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,))
        if await cursor.fetchone() is None:  # deleted meanwhile (a second request)
            raise NotFound(f"user {user_id} does not exist")
        await lock_username(conn, username)
        cursor = await conn.execute(
            "WITH gone_likes AS (DELETE FROM likes WHERE user_id = %(user)s RETURNING post_id), "
            "gone_comments AS (DELETE FROM comments WHERE author_id = %(user)s "
            "                  RETURNING post_id) "
            "SELECT DISTINCT c.post_id FROM (SELECT post_id FROM gone_likes "
            "                                UNION ALL SELECT post_id FROM gone_comments) c "
            "JOIN posts p ON p.id = c.post_id WHERE p.author_id <> %(user)s",
            {"user": user_id},
        )
        counted = sorted(int(row[0]) for row in await cursor.fetchall())
        await conn.execute(
            "INSERT INTO departed_followers (followee_id, follower_id, id) "
            "SELECT followee_id, follower_id, id FROM follows WHERE followee_id = %s",
            (user_id,),
        )
        await conn.execute(
            "INSERT INTO account_deletions (user_id, username, post_ids, username_free_at) "
            "SELECT %(user)s, %(name)s, coalesce(array_agg(id ORDER BY id DESC), '{}'), "
            "       now() + make_interval(secs => %(hold)s) "
            "FROM (SELECT id FROM posts WHERE author_id = %(user)s "
            "      ORDER BY id DESC LIMIT %(newest)s) AS newest",
            {
                "user": user_id,
                "name": username,
                "hold": self._hold_seconds,
                "newest": self._newest_posts,
            },
        )
        await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
        await self._db.remember_write(conn, user_id)
        return counted
