"""Postgres access: writes on the primary, reads on the replica unless the reader just wrote.

`transaction()` runs on the primary; a write that should be visible to its author at once calls
`remember_write()` inside it, and once the transaction has committed the primary's WAL position
is recorded for that user (`dmb.stores.read_your_writes`). The position is taken after COMMIT,
so it covers the commit record: taken before, a replica could have replayed up to it and still
not show the row. `reading(for_user=...)` goes to the replica only once it has replayed past the
user's recorded position, otherwise to the primary. Without a replica URL all reads use the
primary.

Connections are in autocommit mode: a read is one statement and one round trip, where an
implicit transaction would add a BEGIN and a COMMIT to each; writes open explicit transactions.

With tracing on, every statement is a span (`TracedCursor`, the pools' cursor class only then),
and a sampled transaction first writes its trace context into the WAL as a transactional
logical message (`pg_logical_emit_message(true, 'dmb.trace', ...)`): the CDC relay reads rows
from the WAL, not the request, and wal2json hands it the message inside the same transaction,
so the relay's publish span continues the request's trace. A rolled-back transaction takes
its message with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self

import psycopg
import redis.asyncio as aioredis
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from redis.exceptions import RedisError

from dmb import tracing
from dmb.errors import Unavailable
from dmb.settings import Settings
from dmb.stores import read_your_writes
from dmb.stores.change_events import TRACE_MESSAGE_PREFIX

log = logging.getLogger("dmb.postgres")

AsyncConn = psycopg.AsyncConnection[TupleRow]
ReadPool = AsyncConnectionPool[AsyncConn]
_QUERY_TEXT_LIMIT = 1_000  # characters of SQL on a span (parameters are never recorded)
_EMIT_TRACE = "SELECT pg_logical_emit_message(true, %s, %s)"
_WRITE_VERB = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)


def _query_text(query: Any, conn: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    try:
        return str(query.as_string(conn))
    except Exception:  # a composed query that cannot render without its connection
        return repr(query)


def sql_operation(text: str) -> str:
    """The statement's verb for the span name; a `WITH` names the write it wraps, if any
    (`WITH p AS (INSERT ...) SELECT ...` is an INSERT)."""
    verb = text.split(None, 1)[0].upper() if text else "SQL"
    if verb == "WITH":
        write = _WRITE_VERB.search(text)
        return write.group(1).upper() if write else "SELECT"
    return verb


def _sql_span(query: Any, conn: Any, pool: str) -> contextlib.AbstractContextManager[tracing.Span]:
    text = _query_text(query, conn).strip()
    operation = sql_operation(text)
    return tracing.child_span(
        f"sql {operation}",
        tracing.CLIENT,
        {
            "db.system.name": "postgresql",
            "db.operation.name": operation,
            "db.query.text": text[:_QUERY_TEXT_LIMIT],
            "dmb.db.pool": pool,
        },
    )


class TracedCursor(psycopg.AsyncCursor[TupleRow]):
    """A cursor whose statements are spans; the pools use it only when tracing is on."""

    pool = ""  # which pool's connections it runs on (a subclass per pool: `traced_cursor`)

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Self:
        with _sql_span(query, self.connection, self.pool):
            return await super().execute(query, params, **kwargs)

    async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        with _sql_span(query, self.connection, self.pool):
            await super().executemany(query, params_seq, **kwargs)


def traced_cursor(pool: str) -> type[TracedCursor]:
    return type(f"TracedCursor_{pool}", (TracedCursor,), {"pool": pool})


class Database:
    """Connection pools for the primary and (optionally) the replica."""

    def __init__(self, settings: Settings, redis: aioredis.Redis | None = None) -> None:
        if settings.database_url is None:
            raise ValueError("DMB_DATABASE_URL is not set (start the local stack with `dmb up`)")
        self._timeout = settings.store_timeout_seconds
        self._redis = redis  # None: no read-your-writes tracking (reads go to the replica)
        self._writers: dict[AsyncConn, int] = {}  # open transactions that asked for RYW
        self._purging: set[str] = set()  # pools being checked after a connection failed
        self._purges: set[asyncio.Task[None]] = set()
        self.primary = self._pool(settings.database_url.get_secret_value(), settings, "primary")
        replica_url = settings.database_replica_url
        self.replica = (
            self._pool(replica_url.get_secret_value(), settings, "replica") if replica_url else None
        )

    def _pool(self, url: str, settings: Settings, name: str) -> AsyncConnectionPool[AsyncConn]:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, int(settings.store_timeout_seconds)),
            "options": f"-c statement_timeout={int(settings.store_timeout_seconds * 1000)}",
        }
        if tracing.enabled():
            kwargs["cursor_factory"] = traced_cursor(name)
        return AsyncConnectionPool(
            url,
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
            timeout=settings.store_timeout_seconds,
            name=name,
            open=False,
            kwargs=kwargs,
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
                    if tracing.recording():  # the relay continues this trace (module doc)
                        carrier = tracing.encode_carrier(tracing.outgoing())
                        await psycopg.AsyncCursor(conn).execute(
                            _EMIT_TRACE, (TRACE_MESSAGE_PREFIX, carrier)
                        )
                    yield conn
            finally:
                writer = self._writers.pop(conn, None)
            if writer is not None:  # reached only once the transaction committed
                await self._record_position(conn, writer)

    @asynccontextmanager
    async def reading(
        self, for_user: int | None = None, fresh: bool = False
    ) -> AsyncIterator[AsyncConn]:
        """A connection for reads: the replica unless it lags behind `for_user`'s last write.

        `fresh` reads the primary: for rare reads that must see every commit (login right
        after registering, before the caller has an identity to track).
        """
        pool = self.primary if fresh else await self.read_pool(for_user)
        async with self._connection(pool) as conn:
            yield conn

    @asynccontextmanager
    async def reading_from(self, pool: ReadPool) -> AsyncIterator[AsyncConn]:
        """A connection from `pool`, chosen by `read_pool` (reads batched across callers pick
        the pool per caller first, then read together from each)."""
        async with self._connection(pool) as conn:
            yield conn

    async def remember_write(self, conn: AsyncConn, user_id: int) -> None:
        """Inside `transaction()`: once it commits, `user_id`'s next reads must see this write."""
        if self.replica is not None and self._redis is not None:
            self._writers[conn] = user_id

    async def _record_position(self, conn: AsyncConn, user_id: int) -> None:
        assert self._redis is not None
        row = await (await conn.execute("SELECT pg_current_wal_insert_lsn()::text")).fetchone()
        if row is not None:
            await read_your_writes.record(self._redis, user_id, row[0])

    async def read_pool(self, for_user: int | None) -> ReadPool:
        """Where `for_user`'s reads go: the replica unless it lags behind their last write."""
        if self.replica is None:
            return self.primary
        if for_user is None:
            return self.replica
        known = read_your_writes.known_for(for_user)
        if known is not None:
            lsn = known.lsn
        elif self._redis is None:
            return self.replica
        else:
            try:
                lsn = await read_your_writes.lookup(self._redis, for_user)
            except RedisError:
                return self.primary  # cannot tell: the primary is always fresh
        if lsn is None:
            return self.replica
        async with self._connection(self.replica) as conn:
            cursor = await conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))
            row = await cursor.fetchone()
        return self.replica if row is not None and row[0] else self.primary

    def _purge_soon(self, pool: AsyncConnectionPool[AsyncConn]) -> None:
        if pool.name not in self._purging:
            self._purging.add(pool.name)
            task = asyncio.get_running_loop().create_task(self._purge(pool))
            self._purges.add(task)
            task.add_done_callback(self._purges.discard)

    async def _purge(self, pool: AsyncConnectionPool[AsyncConn]) -> None:
        try:
            await pool.check()  # discards the broken idle connections and replaces them
        except Exception as exc:  # still down: the next failure tries again
            log.info("database (%s) pool check failed: %s", pool.name, type(exc).__name__)
        finally:
            self._purging.discard(str(pool.name))

    @asynccontextmanager
    async def _connection(self, pool: AsyncConnectionPool[AsyncConn]) -> AsyncIterator[AsyncConn]:
        try:
            async with pool.connection(timeout=self._timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable(f"database ({pool.name}) did not answer in time") from exc
        except psycopg.OperationalError as exc:
            # psycopg's text names the server and the user ('connection to server at "db.internal"
            # ... for user "dmb"'): neither goes into a reply, and the log gets only its class.
            log.warning("database (%s) unavailable: %s", pool.name, type(exc).__name__)
            # After a restart or failover every idle pooled connection is dead: have the pool
            # test them all now, so this request is the only one that fails on one.
            self._purge_soon(pool)
            raise Unavailable(f"database ({pool.name}) unavailable") from exc
