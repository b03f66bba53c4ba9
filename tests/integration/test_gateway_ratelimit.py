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


async def _connected_clients(client: aioredis.Redis) -> int:
    return int((await client.info("clients"))["connected_clients"])


def test_a_burst_of_checks_shares_round_trips_and_each_keeps_its_own_answer(
    settings: Settings,
) -> None:
    """100 concurrent requests on one gateway replica: at most two pipelines (so two
    connections) are out at once, the others wait for the next one and leave together. Every
    request is still charged exactly once and answered from its own replies."""
    shared_user = _pair(ip_capacity=1000, user_capacity=30, rate=0.001)[1]
    positions = [position_key(uuid.uuid4().int % 10**12) for _ in range(100)]

    async def scenario(client: aioredis.Redis) -> tuple[int, float, int, list[str | None]]:
        for i, key in enumerate(positions):
            await client.set(key, f"0/{i:X}".encode(), ex=60)
        observer = create_redis(settings)
        try:
            before = await _connected_clients(observer)
            limiter = RateLimiter(client, max_in_flight=2)
            checks = await asyncio.gather(
                *[
                    limiter.check(
                        [BucketSpec(f"{shared_user.key}:ip:{i}", 1000, 0.001), shared_user],
                        also_get=positions[i],
                    )
                    for i in range(100)
                ]
            )
            opened = await _connected_clients(observer) - before
        finally:
            await observer.aclose()
        left = float(await client.hget(shared_user.key, "tokens") or -1)
        admitted = sum(1 for checked in checks if checked.decision.allowed)
        return admitted, left, opened, [checked.value for checked in checks]

    admitted, left, opened, values = _run(settings, scenario)
    assert admitted == 30
    assert 0 <= left < 1
    assert values == [f"0/{i:X}" for i in range(100)]  # each request's own read, in order
    assert opened <= 2  # one pipeline per request would have opened up to 100 connections


def test_a_script_flush_in_a_burst_reruns_only_the_checks_it_stopped(settings: Settings) -> None:
    buckets = _pair(ip_capacity=100, user_capacity=100, rate=0.001)

    async def scenario(client: aioredis.Redis) -> tuple[list[bool], float]:
        limiter = RateLimiter(client, max_in_flight=1)
        await limiter.check(buckets)  # the script is loaded and the bucket exists
        await client.script_flush()
        checks = await asyncio.gather(*[limiter.check(buckets) for _ in range(20)])
        left = float(await client.hget(buckets[1].key, "tokens") or -1)
        return [checked.decision.allowed for checked in checks], left

    allowed, left = _run(settings, scenario)
    assert allowed == [True] * 20
    assert round(left) == 100 - 21  # every request charged once: none twice, none skipped


def test_a_failed_command_fails_only_its_own_request_in_a_shared_round_trip(
    settings: Settings,
) -> None:
    wrong_type = f"dmb:test:{uuid.uuid4().hex}"  # a hash: GET on it answers WRONGTYPE

    async def scenario(client: aioredis.Redis) -> list[str]:
        await client.hset(wrong_type, "a", "1")
        await client.expire(wrong_type, 60)
        limiter = RateLimiter(client, max_in_flight=1)
        first = limiter.check(_pair(10, 10, 1))  # goes alone; the rest queue behind it
        rest = [
            limiter.check(_pair(10, 10, 1), also_get=wrong_type if i == 3 else None)
            for i in range(8)
        ]
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        return [
            type(result).__name__ if isinstance(result, BaseException) else "ok"
            for result in results
        ]

    outcomes = _run(settings, scenario)
    assert outcomes == ["ok"] * 4 + ["RateLimiterUnavailable"] + ["ok"] * 4
