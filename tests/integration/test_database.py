"""dmb.stores.postgres.Database: read-your-writes positions and the connection mode of reads."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from dmb.settings import Settings
from dmb.stores.postgres import Database
from dmb.stores.read_your_writes import position_key
from dmb.stores.redis import create_redis
from tests.integration.helpers import make_users


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def test_a_write_is_remembered_at_a_position_after_its_commit(
    settings: Settings, database_url: str
) -> None:
    (user,) = make_users(database_url, 1)

    async def scenario() -> tuple[str, str]:
        redis = create_redis(settings)
        db = Database(settings, redis)
        await db.open()
        try:
            async with db.transaction() as conn:
                await conn.execute("UPDATE users SET email = email WHERE id = %s", (user,))
                await db.remember_write(conn, user)
                cursor = await conn.execute("SELECT pg_current_wal_insert_lsn()::text")
                row = await cursor.fetchone()
                assert row is not None
                before_commit = str(row[0])
                assert await redis.get(position_key(user)) is None  # nothing before COMMIT
            stored = await redis.get(position_key(user))
            assert stored is not None
            return before_commit, stored.decode() if isinstance(stored, bytes) else stored
        finally:
            await db.close()
            await redis.aclose()

    before_commit, stored = asyncio.run(scenario())
    assert _lsn(stored) > _lsn(before_commit)  # covers the commit record


async def failing_write(db: Database, user: int) -> None:
    async with db.transaction() as conn:
        await db.remember_write(conn, user)
        await conn.execute("INSERT INTO posts (author_id, content) VALUES (%s, '')", (user,))


def test_a_failed_transaction_remembers_nothing(settings: Settings, database_url: str) -> None:
    (user,) = make_users(database_url, 1)

    async def scenario() -> bytes | str | None:
        redis = create_redis(settings)
        db = Database(settings, redis)
        await db.open()
        try:
            with pytest.raises(psycopg.errors.CheckViolation):
                await failing_write(db, user)
            result: bytes | str | None = await redis.get(position_key(user))
            return result
        finally:
            await db.close()
            await redis.aclose()

    assert asyncio.run(scenario()) is None


def test_a_read_is_one_statement_without_a_transaction(settings: Settings) -> None:
    async def scenario() -> TransactionStatus:
        db = Database(settings)
        await db.open()
        try:
            async with db.reading() as conn:
                await conn.execute("SELECT 1")
                return TransactionStatus(conn.pgconn.transaction_status)
        finally:
            await db.close()

    assert asyncio.run(scenario()) == TransactionStatus.IDLE  # no BEGIN, so no COMMIT to send
