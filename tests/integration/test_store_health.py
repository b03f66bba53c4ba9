"""StoreHealth against the real stores: without an open pool (the gateway) the Postgres probe
keeps one connection across rounds, and a kept connection that died (Postgres restarted,
connection killed) is replaced at once instead of reporting Postgres down."""

from __future__ import annotations

import asyncio

import psycopg

from dmb.settings import Settings
from dmb.stores.health import StoreHealth
from dmb.stores.redis import create_redis


def test_the_probe_keeps_one_connection_and_replaces_a_dead_one(settings: Settings) -> None:
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()

    async def scenario() -> None:
        redis = create_redis(settings)
        health = StoreHealth(settings, redis, cache_seconds=0)
        try:

            async def backend() -> int:
                probes = {probe.name: probe for probe in await health.check()}
                assert probes["postgres"].ok, probes["postgres"]
                conn = health._own[url]
                row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
                assert row is not None
                return int(row[0])

            first = await backend()
            assert await backend() == first  # kept, not reconnected
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            assert await backend() != first  # replaced, and Postgres still reported ok
        finally:
            await health.close()
            await redis.aclose()

    asyncio.run(scenario())
