"""Token buckets: the key layout, the arithmetic (a Python reference model of ratelimit.lua), and
how the answers of several buckets become one decision and its RateLimit-* headers.

Key layout. One request's buckets are charged by ONE atomic script call, so on Redis Cluster
they must hash to one slot. The hash tag is the client: the IP for an anonymous request
(`dmb:rl:{ip:1.2.3.4}`), the user once authenticated (`dmb:rl:{user:42}` and that user's IP
bucket `dmb:rl:{user:42}:ip:1.2.3.4`). Tags spread the buckets over every slot (a shared tag
such as `{rl}` would put all rate limiting on one hot shard). The price: an authenticated
request's IP bucket is per (user, IP), separate from the anonymous bucket of the same IP. So the
user bucket is exact wherever the user connects from (a token used from many addresses gets one
allowance), anonymous traffic (registration, login, refresh, bad tokens) is held per IP, and
users behind one NAT do not drain each other's authenticated traffic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dmb.settings import Settings


@dataclass(frozen=True)
class BucketSpec:
    key: str
    capacity: int
    refill_per_sec: float


@dataclass(frozen=True)
class BucketState:
    """One bucket after a check: tokens left, seconds until `cost` tokens, seconds until full."""

    spec: BucketSpec
    tokens: float
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
    degraded: bool = False  # decided without Redis

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.retry_after_seconds))
        return headers


def request_buckets(settings: Settings, client_ip: str, user_id: int | None) -> list[BucketSpec]:
    """The buckets one request is charged to, all sharing the client's hash tag."""
    ip_capacity = settings.rate_limit_ip_capacity
    ip_rate = settings.rate_limit_ip_refill_per_sec
    if user_id is None:
        return [BucketSpec(f"dmb:rl:{{ip:{client_ip}}}", ip_capacity, ip_rate)]
    tag = f"dmb:rl:{{user:{user_id}}}"
    return [
        BucketSpec(f"{tag}:ip:{client_ip}", ip_capacity, ip_rate),
        BucketSpec(tag, settings.rate_limit_user_capacity, settings.rate_limit_user_refill_per_sec),
    ]


def refill(spec: BucketSpec, tokens: float | None, at: float | None, now: float) -> float:
    """Tokens in the bucket at `now`; an unknown (or expired) bucket is full."""
    if tokens is None or at is None:
        return float(spec.capacity)
    return min(float(spec.capacity), tokens + max(0.0, now - at) * spec.refill_per_sec)


def take_all(
    specs: Sequence[BucketSpec], levels: Sequence[float], cost: float = 1.0
) -> tuple[bool, list[BucketState]]:
    """All or nothing: charge every bucket only if every bucket holds `cost` tokens.

    A request refused by one bucket spends nothing from the others (what the Lua script does).
    """
    allowed = all(level >= cost for level in levels)
    states = []
    for spec, level in zip(specs, levels, strict=True):
        left = level - cost if allowed else level
        rate = spec.refill_per_sec
        states.append(
            BucketState(spec, left, max(0.0, cost - left) / rate, (spec.capacity - left) / rate)
        )
    return allowed, states


def decide(allowed: bool, states: Sequence[BucketState]) -> Decision:
    """One decision; the most restrictive bucket answers the headers.

    Refused: the bucket that needs the longest wait (Retry-After covers every bucket).
    Admitted: the bucket with the fewest whole tokens left (ties: the smaller one).
    """
    if allowed:
        worst = min(states, key=lambda s: (math.floor(s.tokens), s.spec.capacity))
    else:
        worst = max(states, key=lambda s: s.retry_after)
    return Decision(
        allowed=allowed,
        limit=worst.spec.capacity,
        remaining=max(0, math.floor(worst.tokens)),
        reset_seconds=math.ceil(worst.reset_after),
        retry_after_seconds=math.ceil(max(s.retry_after for s in states)),
    )


def degraded(specs: Sequence[BucketSpec]) -> Decision:
    """Fail-open: admitted without Redis; the headers show the tightest configured limit."""
    tightest = min(specs, key=lambda s: s.capacity)
    return Decision(True, tightest.capacity, tightest.capacity, 0, 0, degraded=True)
