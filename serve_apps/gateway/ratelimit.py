"""Token-bucket rate limiting on Redis: per client IP, and per user once authenticated.

Each bucket is checked and charged by one atomic Lua call (token_bucket.lua), so any number of
gateway replicas together never admit more than a bucket allows. Each bucket key carries its own
hash tag (`{ip:...}`, `{user:...}`) so the keys spread over a Redis Cluster's slots; the IP and
user checks (and the logout-denylist lookup) travel in one pipelined round trip. The most
restrictive bucket answers: a request passes only if every bucket admits it.

The script is loaded once and called by SHA; after a Redis restart or SCRIPT FLUSH the NOSCRIPT
reply triggers one reload. When Redis cannot be reached the limiter fails open (logged and
counted) unless settings say fail-closed.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from dmb.settings import Settings

log = logging.getLogger("dmb.gateway.ratelimit")
SCRIPT = (Path(__file__).with_name("token_bucket.lua")).read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


@dataclass(frozen=True)
class BucketSpec:
    key: str
    capacity: int
    refill_per_sec: float


@dataclass(frozen=True)
class BucketState:
    spec: BucketSpec
    allowed: bool
    remaining: float
    retry_after: float
    reset_after: float


@dataclass(frozen=True)
class Decision:
    """Whether to serve the request, and what to put in the RateLimit-* headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int
    degraded: bool = False  # Redis unreachable: decided without it

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.retry_after_seconds))
        return headers


def ip_bucket(settings: Settings, client_ip: str) -> BucketSpec:
    return BucketSpec(
        f"dmb:rl:{{ip:{client_ip}}}",
        settings.rate_limit_ip_capacity,
        settings.rate_limit_ip_refill_per_sec,
    )


def user_bucket(settings: Settings, user_id: int) -> BucketSpec:
    return BucketSpec(
        f"dmb:rl:{{user:{user_id}}}",
        settings.rate_limit_user_capacity,
        settings.rate_limit_user_refill_per_sec,
    )


def decide(states: list[BucketState]) -> Decision:
    """Combine bucket answers: denied if any bucket denies; headers from the tightest bucket."""
    denied = [s for s in states if not s.allowed]
    if denied:
        worst = max(denied, key=lambda s: s.retry_after)
    else:
        worst = min(states, key=lambda s: s.remaining / s.spec.capacity)
    return Decision(
        allowed=not denied,
        limit=worst.spec.capacity,
        remaining=max(0, math.floor(worst.remaining)),
        reset_seconds=math.ceil(worst.reset_after),
        retry_after_seconds=math.ceil(worst.retry_after),
    )


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, fail_open: bool) -> None:
        self._redis = redis
        self.fail_open = fail_open
        self._loaded = False

    async def check(
        self, buckets: list[BucketSpec], also_exists: str | None = None
    ) -> tuple[Decision, bool]:
        """Charge one token from every bucket; also answer EXISTS `also_exists` in the same trip.

        Returns (decision, key_exists). Raises RedisError only when failing closed.
        """
        try:
            return await self._check(buckets, also_exists)
        except NoScriptError:
            self._loaded = False
            return await self._check(buckets, also_exists)

    async def _check(
        self, buckets: list[BucketSpec], also_exists: str | None
    ) -> tuple[Decision, bool]:
        if not self._loaded:
            await self._redis.script_load(SCRIPT)
            self._loaded = True
        async with self._redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.evalsha(SCRIPT_SHA, 1, bucket.key, bucket.capacity, bucket.refill_per_sec, 1)
            if also_exists:
                pipe.exists(also_exists)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, NoScriptError):
                raise reply
            if isinstance(reply, RedisError):
                raise reply
        states = [
            BucketState(bucket, reply[0] == 1, float(reply[1]), float(reply[2]), float(reply[3]))
            for bucket, reply in zip(buckets, replies, strict=False)
        ]
        exists = bool(replies[-1]) if also_exists else False
        return decide(states), exists


def unlimited(buckets: list[BucketSpec]) -> Decision:
    """What fail-open answers: allowed, with the configured limit and no remaining count."""
    tightest = min(buckets, key=lambda b: b.capacity)
    return Decision(True, tightest.capacity, tightest.capacity, 0, 0, degraded=True)
