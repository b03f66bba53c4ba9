"""Admission: the one Redis round trip the gateway makes per request, before any service call.

In one pipeline it charges the request's token buckets (ratelimit.lua: the IP bucket and, once
authenticated, the user bucket, checked and charged atomically, all or nothing, on Redis' clock,
so any number of gateway replicas together never admit more than a bucket allows), reads the
cached revocation state of the caller's access token and of its account
(dmb.domain.revocation), and reads the caller's latest write position (read-your-writes,
`dmb.stores.read_your_writes`), which then travels with the request so the service's read
needs no lookup of its own. The bucket keys share the client's hash tag (buckets.py), so the
script also works on Redis Cluster; the other keys have slots of their own and ride the same
round trip as pipelined commands.

When Redis fails (down, or refusing the script's writes when out of memory), the rate limit
fails open by default (`DMB_RATE_LIMIT_FAIL_OPEN`), and for a short cool-down afterwards checks
fail at once instead of each waiting for a socket timeout. Revocation never fails open: when
the cache cannot tell (a miss, or Redis failed), the caller goes on marked unchecked and the
service boundary asks Postgres before the method runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from dmb.domain.buckets import BucketSpec, BucketState, Decision, decide, degraded, request_buckets
from dmb.domain.identity import Caller
from dmb.domain.revocation import account_closed_key, cached_states, denylist_key
from dmb.settings import Settings
from dmb.stores.read_your_writes import WritePosition, position_key
from dmb.stores.redis import LuaScript, run_pipeline

SCRIPT = LuaScript(Path(__file__).with_name("ratelimit.lua").read_text())
log = logging.getLogger("dmb.admission")


@dataclass(frozen=True)
class Checked:
    """One check's answers: the decision, and what was asked of the other keys on the way."""

    decision: Decision
    key_exists: bool = False
    value: str | None = None
    read: tuple[bytes | None, ...] = ()


class RateLimiterUnavailable(Exception):
    """Redis could not answer (or failed moments ago)."""


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

    async def check(
        self,
        buckets: Sequence[BucketSpec],
        also_exists: str | None = None,
        also_get: str | None = None,
        also_read: Sequence[str] = (),
    ) -> Checked:
        """Charge one token from every bucket (all or nothing) and, in the same round trip,
        tell whether the key `also_exists` exists, read the string at `also_get`, and the raw
        values at `also_read`."""
        if self._clock() < self._failed_until:
            raise RateLimiterUnavailable("Redis failed moments ago; not retrying yet")
        args = script_args(buckets)

        def fill(pipe: Pipeline) -> None:
            SCRIPT.queue(pipe, args[: len(buckets)], args[len(buckets) :])
            if also_exists is not None:
                pipe.exists(also_exists)
            if also_get is not None:
                pipe.get(also_get)
            for key in also_read:
                pipe.get(key)

        try:
            replies = await run_pipeline(self._redis, [SCRIPT], fill)
        except (RedisError, OSError) as exc:
            self._failed_until = self._clock() + self._cooldown
            raise RateLimiterUnavailable(f"{type(exc).__name__}: {exc}") from exc
        reply, extra = replies[0], list(replies[1:])
        exists = bool(extra.pop(0)) if also_exists is not None else False
        value = extra.pop(0) if also_get is not None else None
        return Checked(
            parse_reply(buckets, reply),
            exists,
            value.decode() if value is not None else None,
            tuple(extra),
        )


@dataclass(frozen=True)
class Admitted:
    """What admission decided for one request.

    `decision` None: Redis is down and the limiter fails closed. `degraded`: decided without
    Redis (the revocation cache could not be read and the write position is unknown).
    `revocation`: what the cache says of the caller's token, True revoked, False not revoked,
    None unknown (no caller, a cache miss, or Redis failed: the service must ask Postgres)."""

    decision: Decision | None
    revocation: bool | None = None
    write_position: WritePosition | None = None

    @property
    def revoked(self) -> bool:
        return self.revocation is True

    @property
    def degraded(self) -> bool:
        return self.decision is None or self.decision.degraded


class Admission:
    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self._settings = settings
        self._limiter = RateLimiter(redis)
        self._next_failure_log = 0.0

    async def admit(self, client_ip: str, caller: Caller | None, exempt: bool = False) -> Admitted:
        """Charge the request's buckets, read the caller's revocation state (cached) and write
        position.

        Without Redis: admitted (fail-open) or refused (fail-closed); `exempt` requests (the
        gateway's own /healthz, /openapi.json) are always admitted, so /healthz can say what is
        wrong. The write position then stays unknown and the service looks it up itself.
        """
        buckets = request_buckets(self._settings, client_ip, caller.user_id if caller else None)
        position = position_key(caller.user_id) if caller else None
        revocation_keys = (
            (denylist_key(caller.jti), account_closed_key(caller.user_id)) if caller else ()
        )
        try:
            checked = await self._limiter.check(
                buckets, also_get=position, also_read=revocation_keys
            )
        except RateLimiterUnavailable as exc:
            fail_open = self._settings.rate_limit_fail_open
            self._log_failure(exc, fail_open)
            return Admitted(degraded(buckets) if fail_open or exempt else None)
        written = WritePosition(caller.user_id, checked.value) if caller else None
        revocation = cached_states(*checked.read) if caller else None
        return Admitted(checked.decision, revocation, written)

    def _log_failure(self, exc: Exception, fail_open: bool) -> None:
        """At most one line a second while Redis is down: every request fails the same way."""
        now = time.monotonic()
        if now < self._next_failure_log:
            return
        self._next_failure_log = now + 1.0
        mode = "admitting (fail-open)" if fail_open else "refusing (fail-closed)"
        log.warning("rate limiter: Redis unavailable, %s: %s", mode, exc)
