"""Health probes of the stores: does each one answer right now?

Used by the gateway's `/healthz` (which answers 200 only when every dependency does). Each probe
has the store timeout; they run in parallel; a failure is reported with its reason, not raised.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from dataclasses import dataclass

import psycopg
import redis.asyncio as aioredis
from pydantic import SecretStr

from dmb.settings import Settings


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    detail: str


class StoreHealth:
    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self._settings = settings
        self._redis = redis

    async def check(self) -> list[Probe]:
        """One probe per dependency (the replica only when one is configured)."""
        probes = [
            self._probe("redis", self._redis.ping()),
            self._probe("postgres", self._ping_postgres(self._settings.database_url)),
            self._probe("kafka", self._ping_kafka()),
        ]
        if self._settings.database_replica_url is not None:
            replica = self._ping_postgres(self._settings.database_replica_url)
            probes.append(self._probe("postgres_replica", replica))
        return list(await asyncio.gather(*probes))

    async def _probe(self, name: str, probe: Awaitable[object]) -> Probe:
        try:
            await asyncio.wait_for(probe, timeout=self._settings.store_timeout_seconds)
        except Exception as exc:  # any failure is reported, not raised
            return Probe(name, False, f"{type(exc).__name__}: {exc}"[:200])
        return Probe(name, True, "ok")

    async def _ping_postgres(self, url: SecretStr | None) -> None:
        if url is None:
            raise RuntimeError("DMB_DATABASE_URL is not set")
        async with await psycopg.AsyncConnection.connect(
            url.get_secret_value(), connect_timeout=int(self._settings.store_timeout_seconds)
        ) as conn:
            await conn.execute("SELECT 1")

    async def _ping_kafka(self) -> None:
        bootstrap = self._settings.kafka_bootstrap
        if not bootstrap:
            raise RuntimeError("DMB_KAFKA_BOOTSTRAP is not set")
        host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: socket.create_connection((host, int(port)), timeout=2).close()
        )
