"""Redis client factory: bounded timeouts so a dead Redis gives a clear error, not a hang."""

from __future__ import annotations

import redis.asyncio as aioredis

from dmb.settings import Settings


def create_redis(settings: Settings) -> aioredis.Redis:
    if settings.redis_url is None:
        raise ValueError("DMB_REDIS_URL is not set (start the local stack with `dmb up`)")
    return aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=settings.store_timeout_seconds,
        socket_connect_timeout=settings.store_timeout_seconds,
        health_check_interval=30,
        decode_responses=False,
    )
