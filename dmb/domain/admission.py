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
from redis.exceptions import NoScriptError, RedisError

from dmb.coalescing import Coalescer
from dmb.domain.buckets import BucketSpec, BucketState, Decision, decide, degraded, request_buckets
from dmb.domain.identity import Caller
from dmb.domain.revocation import account_closed_key, cached_states, denylist_key
from dmb.settings import Settings
from dmb.stores.read_your_writes import WritePosition, position_key
from dmb.stores.redis import LuaScript, pipeline_replies

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


@dataclass(frozen=True)
class _Check:
    """One request's commands in the admission pipeline: the script, then the extra reads."""

    buckets: Sequence[BucketSpec]
    also_exists: str | None
    also_get: str | None
    also_read: Sequence[str]

    def queue(self, pipe: Pipeline) -> None:
        args = script_args(self.buckets)
        SCRIPT.queue(pipe, args[: len(self.buckets)], args[len(self.buckets) :])
        if self.also_exists is not None:
            pipe.exists(self.also_exists)
        if self.also_get is not None:
            pipe.get(self.also_get)
        for key in self.also_read:
            pipe.get(key)

    @property
    def commands(self) -> int:
        return (
            1 + (self.also_exists is not None) + (self.also_get is not None) + len(self.also_read)
        )

    def answer(self, replies: Sequence[Any]) -> Checked:
        reply, extra = replies[0], list(replies[1:])
        exists = bool(extra.pop(0)) if self.also_exists is not None else False
        value = extra.pop(0) if self.also_get is not None else None
        return Checked(
            parse_reply(self.buckets, reply),
            exists,
            value.decode() if value is not None else None,
            tuple(extra),
        )


class RateLimiter:
    """The gateway's admission round trip. With `max_in_flight` >= 1, checks that arrive while
    that many pipelines are out leave together in the next one (dmb.coalescing): each keeps
    its own script call, atomic on Redis, and its own replies, but under load many requests
    share one round trip's socket writes, reads and wake-ups. 0: one pipeline per check."""

    def __init__(
        self,
        redis: aioredis.Redis,
        cooldown_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = 2,
        max_batch: int = 64,
    ) -> None:
        self._redis = redis
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._failed_until = 0.0
        self._coalescer: Coalescer[None, _Check, Checked] | None = (
            Coalescer(self._round_trip, max_in_flight, max_batch) if max_in_flight > 0 else None
        )
        self.round_trips = 0

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
        check = _Check(buckets, also_exists, also_get, tuple(also_read))
        if self._coalescer is not None:
            return await self._coalescer.submit(None, check)
        result = (await self._round_trip(None, [check]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def _round_trip(self, _: None, checks: list[_Check]) -> list[Checked | BaseException]:
        """Every check in one pipeline; a check whose script Redis had forgotten (NOSCRIPT: none
        of its commands charged anything) goes again, alone with the others that met it, after
        the script is loaded. Any other failure fails its own check, and starts the cool-down."""
        results: list[Checked | BaseException] = list(await self._pipelined(checks))
        again = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if again:
            try:
                await self._redis.script_load(SCRIPT.source)
                retried = await self._pipelined([checks[i] for i in again])
            except (RedisError, OSError) as exc:
                retried = [self._unavailable(exc)] * len(again)
            for i, result in zip(again, retried, strict=True):
                results[i] = (
                    self._unavailable(result) if isinstance(result, NoScriptError) else result
                )
        return results

    async def _pipelined(self, checks: list[_Check]) -> list[Checked | BaseException]:
        """Each check's answer from one round trip, or its failure: NoScriptError as it is (to
        be retried), anything else as RateLimiterUnavailable."""
        self.round_trips += 1
        try:
            replies = await pipeline_replies(self._redis, lambda pipe: _queue_all(pipe, checks))
        except (RedisError, OSError) as exc:
            return [self._unavailable(exc)] * len(checks)
        results: list[Checked | BaseException] = []
        at = 0
        for check in checks:
            mine = replies[at : at + check.commands]
            at += check.commands
            error = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if isinstance(error, NoScriptError):
                results.append(error)
            elif error is not None:
                results.append(self._unavailable(error))
            else:
                results.append(check.answer(mine))
        return results

    def _unavailable(self, error: BaseException) -> RateLimiterUnavailable:
        self._failed_until = self._clock() + self._cooldown
        failure = RateLimiterUnavailable(f"{type(error).__name__}: {error}")
        failure.__cause__ = error
        return failure


def _queue_all(pipe: Pipeline, checks: Sequence[_Check]) -> None:
    for check in checks:
        check.queue(pipe)


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
        self._limiter = RateLimiter(redis, max_in_flight=settings.rate_limit_coalesce_in_flight)
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
