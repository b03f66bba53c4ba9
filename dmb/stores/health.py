"""Health probes of the stores: does each one answer right now?

Used by the gateway's `/healthz` (which answers 200 only when every dependency does). Each probe
has the store timeout; they run in parallel; a failure is reported with its reason, not raised.
The answer is shared for `CACHE_SECONDS` (one probe round in flight at a time, see `recent.py`),
so a storm of health checks costs the stores one round every second and a half per replica.
Postgres is asked over the process' pool when it is open (services); the gateway has no pool
open, so the probe keeps one connection of its own per database, replaced when it fails.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from dataclasses import dataclass

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from dmb.settings import Settings
from dmb.stores.postgres import AsyncConn, Database
from dmb.stores.recent import Recent

CACHE_SECONDS = 1.5


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    detail: str


class StoreHealth:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        db: Database | None = None,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._db = db
        self._own: dict[str, AsyncConn] = {}  # by URL: connections of the probes' own
        self._recent = Recent(self._check_now, cache_seconds)

    async def check(self) -> list[Probe]:
        """The probes' latest answer (at most `cache_seconds` old)."""
        return await self._recent.get()

    async def _check_now(self) -> list[Probe]:
        """One probe per dependency (the replica only when one is configured)."""
        pools = self._db
        probes = [
            self._probe("redis", self._redis.ping()),
            self._probe(
                "postgres",
                self._ping_postgres(self._settings.database_url, pools.primary if pools else None),
            ),
            self._probe("kafka", self._ping_kafka()),
        ]
        if self._settings.database_replica_url is not None:
            replica = self._ping_postgres(
                self._settings.database_replica_url, pools.replica if pools else None
            )
            probes.append(self._probe("postgres_replica", replica))
        return list(await asyncio.gather(*probes))

    async def _probe(self, name: str, probe: Awaitable[object]) -> Probe:
        try:
            await asyncio.wait_for(probe, timeout=self._settings.store_timeout_seconds)
        except Exception as exc:  # any failure is reported, not raised
            return Probe(name, False, f"{type(exc).__name__}: {exc}"[:200])
        return Probe(name, True, "ok")

    async def _ping_postgres(
        self, url: SecretStr | None, pool: AsyncConnectionPool[AsyncConn] | None
    ) -> None:
        if url is None:
            raise RuntimeError("DMB_DATABASE_URL is not set")
        if pool is not None and not pool.closed:
            async with pool.connection(timeout=self._settings.store_timeout_seconds) as pooled:
                await pooled.execute("SELECT 1")
            return
        # No pool open here (the gateway): one connection kept for the probes. A kept one that
        # fails (Postgres restarted since) is replaced once before the probe reports down.
        key = url.get_secret_value()
        kept = self._own.pop(key, None)
        if kept is not None and not kept.closed:
            try:
                await kept.execute("SELECT 1")
            except psycopg.Error:
                await kept.close()
            else:
                self._own[key] = kept
                return
        conn = await psycopg.AsyncConnection.connect(
            key, autocommit=True, connect_timeout=int(self._settings.store_timeout_seconds)
        )
        try:
            await conn.execute("SELECT 1")
        except BaseException:
            await conn.close()
            raise
        self._own[key] = conn

    async def close(self) -> None:
        """Close the probes' own connections (pools belong to their owner)."""
        own, self._own = list(self._own.values()), {}
        for conn in own:
            await conn.close()

    async def _ping_kafka(self) -> None:
        bootstrap = self._settings.kafka_bootstrap
        if not bootstrap:
            raise RuntimeError("DMB_KAFKA_BOOTSTRAP is not set")
        host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: socket.create_connection((host, int(port)), timeout=2).close()
        )
