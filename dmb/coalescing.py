"""Fewer round trips under load: calls to one target that arrive while others to it are in
flight go out together, as one call, when the next slot frees.

With at most `max_in_flight` calls out per target, a call that finds a free slot is sent at
once (no added wait at low load); calls that arrive meanwhile queue and leave as one batch when
a call returns, so under load one round trip's cost is shared by many calls. Two places use it:
the gateway, whose DeploymentHandle hop costs far more CPU than most of our own work (the target
is a service method; serve_apps/gateway/app.py), and point reads of posts, where concurrent
GetPosts become one `= ANY` query and one counters round trip (dmb.domain.posts). Pure asyncio,
independent of Ray and of the stores (the user plugs its call in as `send`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")
Send = Callable[[K, list[T]], Awaitable[list[R | BaseException]]]


@dataclass
class _Target(Generic[T, R]):
    in_flight: int = 0
    queue: list[tuple[T, asyncio.Future[R]]] = field(default_factory=list)


class Coalescer(Generic[K, T, R]):
    def __init__(self, send: Send[K, T, R], max_in_flight: int = 2, max_batch: int = 64) -> None:
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be at least 1")
        self._send = send
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._targets: dict[K, _Target[T, R]] = {}
        self._running: set[asyncio.Task[None]] = set()  # held, so no call is collected midway
        self.batches_sent = 0
        self.items_sent = 0

    async def submit(self, key: K, item: T) -> R:
        """`item`'s result from `send`, sent alone or in a batch with others for `key`."""
        target = self._targets.setdefault(key, _Target())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        target.queue.append((item, future))
        if target.in_flight < self._max_in_flight:
            self._launch(key, target)
        return await future

    def _launch(self, key: K, target: _Target[T, R]) -> None:
        batch = [(item, f) for item, f in target.queue[: self._max_batch] if not f.done()]
        del target.queue[: self._max_batch]
        if not batch:
            return
        target.in_flight += 1
        self.batches_sent += 1
        self.items_sent += len(batch)
        task = asyncio.ensure_future(self._run(key, target, batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(
        self, key: K, target: _Target[T, R], batch: list[tuple[T, asyncio.Future[R]]]
    ) -> None:
        try:
            results = await self._send(key, [item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except BaseException as exc:  # the call itself failed: every request in it fails
            results = [exc] * len(batch)
        finally:
            target.in_flight -= 1
            if target.queue:
                self._launch(key, target)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its request gave up (deadline) while the batch ran
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
