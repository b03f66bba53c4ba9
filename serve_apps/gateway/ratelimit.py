"""Token-bucket rate limiting on Redis: one EVALSHA per request charges all of its buckets.

ratelimit.lua checks and charges the IP bucket and (once authenticated) the user bucket in one
atomic call, all or nothing, on Redis' clock, so any number of gateway replicas together never
admit more than a bucket allows. The keys share the client's hash tag (buckets.py), so the call
also works on Redis Cluster. The logout-denylist lookup rides in the same round trip (pipelined
EXISTS; its key has a slot of its own). The script is loaded once and called by SHA; a NOSCRIPT
reply (Redis restarted, SCRIPT FLUSH, failover) reloads it once.

When Redis fails, `RateLimiterUnavailable` is raised and the caller applies its fail mode; for a
short cool-down afterwards checks fail at once instead of each waiting for a socket timeout.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from serve_apps.gateway.buckets import BucketSpec, BucketState, Decision, decide

SCRIPT = Path(__file__).with_name("ratelimit.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


@dataclass(frozen=True)
class Checked:
    """One check's answers: the decision, and what was asked of the other keys on the way."""

    decision: Decision
    key_exists: bool = False
    value: str | None = None


class RateLimiterUnavailable(Exception):
    """Redis could not answer (or failed moments ago); the gateway applies its fail mode."""


def script_args(buckets: Sequence[BucketSpec], cost: int = 1) -> list[Any]:
    """KEYS then ARGV for ratelimit.lua: cost, then capacity and refill rate per bucket."""
    args: list[Any] = [bucket.key for bucket in buckets]
    args.append(cost)
    for bucket in buckets:
        args.extend((bucket.capacity, repr(float(bucket.refill_per_sec))))
    return args


def parse_reply(buckets: Sequence[BucketSpec], reply: Sequence[Any]) -> Decision:
    allowed = int(reply[0]) == 1
    states = [
        BucketState(
            bucket,
            float(reply[1 + 3 * i]),
            float(reply[2 + 3 * i]),
            float(reply[3 + 3 * i]),
        )
        for i, bucket in enumerate(buckets)
    ]
    return decide(allowed, states)


class RateLimiter:
    def __init__(
        self,
        redis: aioredis.Redis,
        cooldown_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._failed_until = 0.0
        self._loaded = False

    async def check(
        self,
        buckets: Sequence[BucketSpec],
        also_exists: str | None = None,
        also_get: str | None = None,
    ) -> Checked:
        """Charge one token from every bucket (all or nothing) and, in the same round trip,
        tell whether the key `also_exists` exists and read the string at `also_get`."""
        if self._clock() < self._failed_until:
            raise RateLimiterUnavailable("Redis failed moments ago; not retrying yet")
        try:
            try:
                return await self._check(buckets, also_exists, also_get)
            except NoScriptError:
                self._loaded = False
                return await self._check(buckets, also_exists, also_get)
        except (RedisError, OSError) as exc:
            self._failed_until = self._clock() + self._cooldown
            raise RateLimiterUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _check(
        self, buckets: Sequence[BucketSpec], also_exists: str | None, also_get: str | None
    ) -> Checked:
        if not self._loaded:
            await self._redis.script_load(SCRIPT)
            self._loaded = True
        args = script_args(buckets)
        if also_exists is None and also_get is None:
            reply = await self._redis.evalsha(SCRIPT_SHA, len(buckets), *args)
            return Checked(parse_reply(buckets, reply))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(SCRIPT_SHA, len(buckets), *args)
            if also_exists is not None:
                pipe.exists(also_exists)
            if also_get is not None:
                pipe.get(also_get)
            answers = await pipe.execute(raise_on_error=False)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        reply, extra = answers[0], list(answers[1:])
        exists = bool(extra.pop(0)) if also_exists is not None else False
        value = extra.pop(0) if also_get is not None else None
        return Checked(
            parse_reply(buckets, reply), exists, value.decode() if value is not None else None
        )
