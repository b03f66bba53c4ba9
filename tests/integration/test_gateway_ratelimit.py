"""ratelimit.lua on the real Redis: one atomic call per request, Redis time, NOSCRIPT, outages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from dmb.domain.admission import RateLimiter, RateLimiterUnavailable
from dmb.domain.buckets import BucketSpec, take_all
from dmb.domain.identity import denylist_key
from dmb.settings import Settings
from dmb.stores.read_your_writes import position_key
from dmb.stores.redis import create_redis

T = TypeVar("T")


def _pair(ip_capacity: int, user_capacity: int, rate: float) -> list[BucketSpec]:
    """An IP and a user bucket under one fresh hash tag, as buckets.request_buckets lays out."""
    tag = f"dmb:rl:{{test:{uuid.uuid4().hex}}}"
    return [BucketSpec(f"{tag}:ip", ip_capacity, rate), BucketSpec(tag, user_capacity, rate)]


def _run(settings: Settings, scenario: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = create_redis(settings)
        try:
            return await scenario(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_concurrent_replicas_never_admit_more_than_a_bucket_holds(settings: Settings) -> None:
    shared_user = _pair(ip_capacity=1000, user_capacity=50, rate=0.001)[1]

    async def main() -> tuple[int, float]:
        clients = [create_redis(settings) for _ in range(4)]  # four "gateway replicas"
        limiters = [RateLimiter(client) for client in clients]
        # Requests from many IPs for one user: each carries its own IP bucket and the user's.
        requests = [
            [BucketSpec(f"{shared_user.key}:ip:{i % 7}", 1000, 0.001), shared_user]
            for i in range(200)
        ]
        try:
            decisions = await asyncio.gather(
                *[limiters[i % 4].check(buckets) for i, buckets in enumerate(requests)]
            )
            left = float(await clients[0].hget(shared_user.key, "tokens") or -1)
        finally:
            for client in clients:
                await client.aclose()
        return sum(1 for checked in decisions if checked.decision.allowed), left

    admitted, left = asyncio.run(main())
    assert admitted == 50
    assert 0 <= left < 1


def test_one_call_charges_every_bucket_or_none(settings: Settings) -> None:
    ip, user = _pair(ip_capacity=10, user_capacity=2, rate=0.001)

    async def scenario(client: aioredis.Redis) -> list[tuple[bool, float, float]]:
        limiter = RateLimiter(client)
        seen: list[tuple[bool, float, float]] = []
        for _ in range(4):
            decision = (await limiter.check([ip, user])).decision
            ip_left = float(await client.hget(ip.key, "tokens") or -1)
            user_left = float(await client.hget(user.key, "tokens") or -1)
            seen.append((decision.allowed, round(ip_left), round(user_left)))
        return seen

    assert _run(settings, scenario) == [
        (True, 9, 1),
        (True, 8, 0),
        (False, 8, 0),  # refused by the user bucket: the IP bucket kept its token
        (False, 8, 0),
    ]


def test_the_script_agrees_with_the_reference_model(settings: Settings) -> None:
    buckets = _pair(ip_capacity=5, user_capacity=3, rate=0.001)  # no measurable refill

    async def scenario(client: aioredis.Redis) -> list[tuple[bool, int, int]]:
        limiter = RateLimiter(client)
        out = []
        for _ in range(5):
            decision = (await limiter.check(buckets)).decision
            out.append((decision.allowed, decision.limit, decision.remaining))
        return out

    levels = [5.0, 3.0]
    expected = []
    for _ in range(5):
        allowed, states = take_all(buckets, levels)
        levels = [state.tokens for state in states]
        tightest = min(states, key=lambda s: (int(s.tokens), s.spec.capacity))
        expected.append(
            (allowed, 3 if not allowed else tightest.spec.capacity, int(tightest.tokens))
        )
    assert _run(settings, scenario) == expected


def test_refill_runs_on_redis_time(settings: Settings) -> None:
    slow = _pair(ip_capacity=100, user_capacity=2, rate=0.01)  # one token per 100 s
    fast = _pair(ip_capacity=100, user_capacity=1, rate=20.0)

    async def scenario(client: aioredis.Redis) -> tuple[int, int, bool, bool]:
        limiter = RateLimiter(client)
        await limiter.check(slow)
        await limiter.check(slow)
        refused = (await limiter.check(slow)).decision
        await limiter.check(fast)
        drained = (await limiter.check(fast)).decision
        await asyncio.sleep(0.2)  # at least 4 tokens' worth on any clock, capped at 1
        refilled = (await limiter.check(fast)).decision
        ttl = await client.pttl(slow[1].key)
        return refused.retry_after_seconds, ttl, drained.allowed, refilled.allowed

    retry_after, ttl, drained, refilled = _run(settings, scenario)
    assert 99 <= retry_after <= 100  # one token at 0.01/s, less what trickled in meanwhile
    assert 190_000 < ttl <= 201_000  # the key lives until the bucket would be full again
    assert (drained, refilled) == (False, True)


def test_the_script_is_reloaded_after_a_script_flush(settings: Settings) -> None:
    buckets = _pair(ip_capacity=10, user_capacity=10, rate=1)

    async def scenario(client: aioredis.Redis) -> tuple[bool, bool]:
        limiter = RateLimiter(client)
        await limiter.check(buckets)
        await client.script_flush()
        plain = (await limiter.check(buckets)).decision
        await client.script_flush()
        pipelined = (await limiter.check(buckets, also_exists=denylist_key("nothing"))).decision
        return plain.allowed, pipelined.allowed

    assert _run(settings, scenario) == (True, True)


def test_the_denylist_lookup_rides_in_the_same_round_trip(settings: Settings) -> None:
    key = denylist_key(uuid.uuid4().hex)
    buckets = _pair(ip_capacity=5, user_capacity=5, rate=1)

    async def scenario(client: aioredis.Redis) -> tuple[bool, bool]:
        limiter = RateLimiter(client)
        before = (await limiter.check(buckets, also_exists=key)).key_exists
        await client.set(key, b"1", ex=60)
        after = (await limiter.check(buckets, also_exists=key)).key_exists
        return before, after

    assert _run(settings, scenario) == (False, True)


def test_the_write_position_read_rides_in_the_same_round_trip(settings: Settings) -> None:
    key = position_key(uuid.uuid4().int % 10**12)
    buckets = _pair(ip_capacity=5, user_capacity=5, rate=1)

    async def scenario(client: aioredis.Redis) -> tuple[str | None, str | None, bool]:
        limiter = RateLimiter(client)
        before = (await limiter.check(buckets, also_get=key)).value
        await client.set(key, b"0/16B3748", ex=60)
        after = await limiter.check(buckets, also_exists=key, also_get=key)
        return before, after.value, after.key_exists

    assert _run(settings, scenario) == (None, "0/16B3748", True)


def test_unreachable_redis_fails_fast_during_the_cool_down() -> None:
    now = [100.0]

    async def scenario() -> list[str]:
        client = aioredis.Redis(port=1, socket_connect_timeout=0.5)
        limiter = RateLimiter(client, cooldown_seconds=5, clock=lambda: now[0])
        messages = []
        try:
            for advance in (0, 1, 5):
                now[0] += advance
                with pytest.raises(RateLimiterUnavailable) as caught:
                    await limiter.check(_pair(1, 1, 1))
                messages.append(str(caught.value))
        finally:
            await client.aclose()
        return messages

    first, cooling, retried = asyncio.run(scenario())
    assert "ConnectionError" in first
    assert "moments ago" in cooling  # did not wait on the network again
    assert "ConnectionError" in retried
