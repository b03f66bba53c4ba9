"""Postgres access: writes on the primary, reads on the replica, read-your-writes by WAL position.

After a caller's write commits, the primary's WAL position (LSN) is stored under the caller's
id in Redis for a short while (`remember_write()` inside the transaction asks for it; the
position is taken after COMMIT, so it covers the commit record: taken before, a replica could
have replayed up to it and still not show the row). A read on behalf of that caller goes to the
replica only once the replica has replayed up to that position, otherwise to the primary.
Everyone else reads the replica. Without a replica URL all reads use the primary.

Connections are in autocommit mode: a read is one statement and one round trip, where an
implicit transaction would add a BEGIN and a COMMIT to each; writes open explicit transactions.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg
import redis.asyncio as aioredis
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from dmb.domain.errors import Unavailable
from dmb.settings import Settings

AsyncConn = psycopg.AsyncConnection[TupleRow]
READ_YOUR_WRITES_SECONDS = 30


def write_position_key(user_id: int) -> str:
    """Where the WAL position of `user_id`'s latest write is kept (for READ_YOUR_WRITES_SECONDS)."""
    return f"dmb:ryw:{user_id}"


@dataclass(frozen=True)
class WritePosition:
    """A user's latest write position, already read from Redis earlier in the same request
    (the gateway reads it in the round trip it makes anyway); `lsn` None: no recent write.
    Passed to `reading()`, it spares the read a Redis lookup of its own."""

    lsn: str | None


class Database:
    """Connection pools for the primary and (optionally) the replica."""

    def __init__(self, settings: Settings, redis: aioredis.Redis | None = None) -> None:
        if settings.database_url is None:
            raise ValueError("DMB_DATABASE_URL is not set (start the local stack with `dmb up`)")
        self._timeout = settings.store_timeout_seconds
        self._redis = redis
        self._writers: dict[AsyncConn, int] = {}  # open transactions that asked for RYW
        self.primary = self._pool(settings.database_url.get_secret_value(), settings, "primary")
        replica_url = settings.database_replica_url
        self.replica = (
            self._pool(replica_url.get_secret_value(), settings, "replica") if replica_url else None
        )

    def _pool(self, url: str, settings: Settings, name: str) -> AsyncConnectionPool[AsyncConn]:
        return AsyncConnectionPool(
            url,
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
            timeout=settings.store_timeout_seconds,
            name=name,
            open=False,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, int(settings.store_timeout_seconds)),
                "options": f"-c statement_timeout={int(settings.store_timeout_seconds * 1000)}",
            },
        )

    async def open(self) -> None:
        await self.primary.open(wait=False)
        if self.replica is not None:
            await self.replica.open(wait=False)

    async def close(self) -> None:
        await self.primary.close()
        if self.replica is not None:
            await self.replica.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConn]:
        """A connection on the primary inside a transaction (committed on clean exit)."""
        async with self._connection(self.primary) as conn:
            try:
                async with conn.transaction():
                    yield conn
            finally:
                writer = self._writers.pop(conn, None)
            if writer is not None:  # reached only once the transaction committed
                await self._record_position(conn, writer)

    @asynccontextmanager
    async def reading(
        self,
        for_user: int | None = None,
        fresh: bool = False,
        known: WritePosition | None = None,
    ) -> AsyncIterator[AsyncConn]:
        """A connection for reads: the replica unless it lags behind `for_user`'s last write.

        `fresh` reads the primary: for rare reads that must see every commit (login right
        after registering, before the caller has an identity to track).
        """
        pool = self.primary if fresh else await self._read_pool(for_user, known)
        async with self._connection(pool) as conn:
            yield conn

    async def remember_write(self, conn: AsyncConn, user_id: int) -> None:
        """Inside `transaction()`: once it commits, `user_id`'s next reads must see this write."""
        if self.replica is not None and self._redis is not None:
            self._writers[conn] = user_id

    async def _record_position(self, conn: AsyncConn, user_id: int) -> None:
        assert self._redis is not None
        row = await (await conn.execute("SELECT pg_current_wal_insert_lsn()::text")).fetchone()
        if row is None:
            return
        # Without Redis, reads may lag by the replica's delay; the write itself is safe.
        with contextlib.suppress(aioredis.ConnectionError, aioredis.TimeoutError):
            await self._redis.set(write_position_key(user_id), row[0], ex=READ_YOUR_WRITES_SECONDS)

    async def _read_pool(
        self, for_user: int | None, known: WritePosition | None
    ) -> AsyncConnectionPool[AsyncConn]:
        if self.replica is None:
            return self.primary
        if for_user is None or (self._redis is None and known is None):
            return self.replica
        lsn: str | bytes | None
        if known is not None:
            lsn = known.lsn
        else:
            assert self._redis is not None
            try:
                lsn = await self._redis.get(write_position_key(for_user))
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                return self.primary  # cannot tell: the primary is always fresh
        if lsn is None:
            return self.replica
        async with self._connection(self.replica) as conn:
            cursor = await conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                (lsn.decode() if isinstance(lsn, bytes) else lsn,),
            )
            row = await cursor.fetchone()
        return self.replica if row is not None and row[0] else self.primary

    @asynccontextmanager
    async def _connection(self, pool: AsyncConnectionPool[AsyncConn]) -> AsyncIterator[AsyncConn]:
        try:
            async with pool.connection(timeout=self._timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable(f"database ({pool.name}) did not answer in time") from exc
        except psycopg.OperationalError as exc:
            raise Unavailable(f"database ({pool.name}) unavailable: {exc}") from exc
