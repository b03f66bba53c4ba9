"""The username of a deleted account stays taken for a while (DMB_USERNAME_HOLD_SECONDS).

Registration and deletion both take a transaction-level advisory lock on the username before
they look at it, so a registration racing the deletion of the same name either sees the hold
or runs wholly before the deletion (and then finds the name still in use).
"""

from __future__ import annotations

from datetime import UTC

from dmb.errors import AlreadyExists
from dmb.stores.postgres import AsyncConn


async def lock_username(conn: AsyncConn, username: str) -> None:
    """Serialise every transaction that claims or releases `username` (until it ends)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('dmb.username:' || %s, 0))", (username,)
    )


async def refuse_if_held(conn: AsyncConn, username: str) -> None:
    """AlreadyExists while a deleted account's hold on `username` lasts (call under the lock)."""
    cursor = await conn.execute(
        "SELECT max(username_free_at) FROM account_deletions "
        "WHERE username = %s AND username_free_at > now()",
        (username,),
    )
    row = await cursor.fetchone()
    if row is not None and row[0] is not None:
        free_at = row[0].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise AlreadyExists(
            f"that username belonged to a deleted account; it is free again from {free_at}"
        )
