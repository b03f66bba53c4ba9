"""A result worth sharing for a moment: computed at most once at a time, reused while fresh.

`/healthz` is polled by load balancers, Kubernetes and monitors, often several per second per
replica; probing every store on each call turns a probe storm into load on the stores. The
answer is reused for `ttl` seconds after it was computed, and callers arriving while a
computation is in flight await that same one instead of starting their own (single flight).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Recent(Generic[T]):
    def __init__(
        self,
        compute: Callable[[], Awaitable[T]],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute = compute
        self._ttl = ttl
        self._clock = clock
        self._value: tuple[T] | None = None  # a tuple, so a falsy or None result still counts
        self._fresh_until = 0.0
        self._inflight: asyncio.Future[T] | None = None

    async def get(self) -> T:
        """The last result while fresh; otherwise the one computation in flight (started now if
        none is). A failed computation is not remembered: every waiter sees its exception."""
        if self._value is not None and self._clock() < self._fresh_until:
            return self._value[0]
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._refresh())
        # Shielded: a caller that gives up (client disconnects) does not cancel the others' probe.
        return await asyncio.shield(self._inflight)

    async def _refresh(self) -> T:
        try:
            value = await self._compute()
            self._value, self._fresh_until = (value,), self._clock() + self._ttl
            return value
        finally:
            self._inflight = None
