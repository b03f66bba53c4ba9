"""Token buckets on the real Redis: atomic under concurrency, Redis time, NOSCRIPT, fail modes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from dmb.settings import Settings
from dmb.stores.redis import create_redis
from serve_apps.gateway.ratelimit import BucketSpec, BucketState, RateLimiter, decide


def _bucket(capacity: int, rate: float) -> BucketSpec:
    return BucketSpec(f"dmb:rl:{{test:{uuid.uuid4().hex}}}", capacity, rate)


def test_concurrent_checks_from_many_limiters_never_over_admit(settings: Settings) -> None:
    bucket = _bucket(capacity=50, rate=0.001)

    async def scenario() -> int:
        clients = [create_redis(settings) for _ in range(4)]  # four "gateway replicas"
        limiters = [RateLimiter(client, fail_open=True) for client in clients]
        try:
            decisions = await asyncio.gather(*[limiters[i % 4].check([bucket]) for i in range(200)])
        finally:
            for client in clients:
                await client.aclose()
        return sum(1 for decision, _ in decisions if decision.allowed)

    assert asyncio.run(scenario()) == 50


def test_rejection_reports_retry_after_and_remaining(settings: Settings) -> None:
    bucket = _bucket(capacity=2, rate=0.5)  # one token every 2 seconds

    async def scenario() -> list[tuple[bool, int, int]]:
        client = create_redis(settings)
        limiter = RateLimiter(client, fail_open=True)
        try:
            out = []
            for _ in range(3):
                decision, _ = await limiter.check([bucket])
                out.append((decision.allowed, decision.remaining, decision.retry_after_seconds))
            return out
        finally:
            await client.aclose()

    first, second, third = asyncio.run(scenario())
    assert first[:2] == (True, 1)
    assert second[:2] == (True, 0)
    assert third[0] is False
    assert third[2] == 2  # (1 token needed) / (0.5 per second), from Redis' own clock


def test_tokens_refill_with_redis_time(settings: Settings) -> None:
    bucket = _bucket(capacity=1, rate=20.0)

    async def scenario() -> tuple[bool, bool]:
        client = create_redis(settings)
        limiter = RateLimiter(client, fail_open=True)
        try:
            await limiter.check([bucket])
            drained, _ = await limiter.check([bucket])
            await asyncio.sleep(0.2)  # 4 tokens' worth of refill, capped at capacity
            refilled, _ = await limiter.check([bucket])
            return drained.allowed, refilled.allowed
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == (False, True)


def test_script_is_reloaded_after_a_script_flush(settings: Settings) -> None:
    bucket = _bucket(capacity=10, rate=1)

    async def scenario() -> bool:
        client = create_redis(settings)
        limiter = RateLimiter(client, fail_open=False)
        try:
            await limiter.check([bucket])
            await client.script_flush()
            decision, _ = await limiter.check([bucket])
            return decision.allowed
        finally:
            await client.aclose()

    assert asyncio.run(scenario())


def test_denylist_lookup_rides_along(settings: Settings) -> None:
    key = f"dmb:jwt:deny:{uuid.uuid4().hex}"

    async def scenario() -> tuple[bool, bool]:
        client = create_redis(settings)
        limiter = RateLimiter(client, fail_open=True)
        try:
            _, before = await limiter.check([_bucket(5, 1)], also_exists=key)
            await client.set(key, b"1", ex=60)
            _, after = await limiter.check([_bucket(5, 1)], also_exists=key)
            return before, after
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == (False, True)


def test_unreachable_redis_raises_for_the_caller_to_apply_its_mode() -> None:
    async def scenario() -> None:
        client = aioredis.Redis(port=1, socket_connect_timeout=0.5)
        try:
            await RateLimiter(client, fail_open=True).check([_bucket(1, 1)])
        finally:
            await client.aclose()

    with pytest.raises((RedisConnectionError, OSError)):
        asyncio.run(scenario())


def test_the_most_restrictive_bucket_answers() -> None:
    roomy = BucketState(BucketSpec("a", 1000, 10), True, 900, 0, 10)
    tight = BucketState(BucketSpec("b", 100, 10), True, 5, 0, 9.5)
    empty = BucketState(BucketSpec("c", 100, 10), False, 0.4, 0.06, 9.96)
    assert decide([roomy, tight]).limit == 100
    assert decide([roomy, tight]).remaining == 5
    denied = decide([roomy, empty])
    assert not denied.allowed
    assert denied.headers()["Retry-After"] == "1"
    assert denied.headers()["RateLimit-Remaining"] == "0"
