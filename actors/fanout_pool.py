"""The fan-out pool: FanoutWorker Ray actors, each writing one batch of followers' feeds per call
in a single pipelined Redis round trip. `FanoutPool` is the domain's fan-out port
(`dmb.domain.feed_events.FanoutPort`).

Workers are spread over the cluster's nodes: worker i gets a soft affinity to the i-th alive
node, round robin. Ray's SPREAD strategy was tried first and is only a hint: with zero-CPU
workers it often put the whole pool on one node. A soft affinity is honoured on KubeRay too, and
falls back to any node when its node is gone. Workers are restarted by Ray when they die
and their in-flight call is retried (max_restarts/max_task_retries = -1); writes are
idempotent, so a retry is harmless. The pool can grow or shrink while running: removed workers
leave the rotation, finish what they were given, and exit when their last handle is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any

import ray
from ray.util.metrics import Counter, Gauge, Histogram
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dmb import tracing
from dmb.composition import process_components
from dmb.domain.feed_events import ADD, FanoutOp

log = logging.getLogger("dmb.fanout")
# Batch write buckets, seconds: one pipelined round trip is ~1 ms, a loaded Redis much more.
BATCH_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


class FanoutWorker:
    def __init__(self) -> None:
        self._writer = process_components().feed_writer
        self._batches = Counter("dmb_fanout_batches_total", description="Feed batches written")
        self._seconds = Histogram(
            "dmb_fanout_batch_seconds",
            description="Time to write one batch of followers' feeds",
            boundaries=BATCH_BOUNDARIES,
        )

    async def write(
        self,
        op: FanoutOp,
        post_ids: list[int],
        follower_ids: list[int],
        origin: tracing.Carrier | None = None,
    ) -> int:
        """`origin`: the consumer's trace context and request id, when it had any."""
        started = time.perf_counter()
        attributes: dict[str, str | int | list[int]] = {
            "dmb.fanout.op": op,
            "dmb.fanout.feeds": len(follower_ids),
        }
        if len(post_ids) == 1:
            attributes["dmb.post_id"] = post_ids[0]
        else:  # a deleted account's posts, all at once
            attributes["dmb.post_ids"] = post_ids[:100]
        with tracing.incoming(
            origin, "fanout write", tracing.SERVER, attributes, continue_only=True
        ):
            if op == ADD:
                await self._writer.add_to_feeds(post_ids, follower_ids)
            else:
                await self._writer.remove_from_feeds(post_ids, follower_ids)
            log.debug("%s posts %s: %d feeds written", op, post_ids[:5], len(follower_ids))
        self._batches.inc()
        self._seconds.observe(time.perf_counter() - started)
        return len(follower_ids)

    def pid(self) -> int:
        """The worker's process id (operators and tests use it to find a worker's process)."""
        return os.getpid()


def alive_node_ids() -> list[str]:
    """The ids of the cluster's alive nodes, in a stable order (so a pool is spread evenly)."""
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return sorted(node["NodeID"] for node in nodes if node["Alive"])


class FanoutPool:
    """Round-robin dispatch of batches to workers; `resize` changes the pool while it runs."""

    def __init__(self, size: int, worker_cpus: float = 0.0) -> None:
        self._cpus = worker_cpus
        self._workers: list[Any] = []
        self._cycle: itertools.cycle[Any] | None = None
        self._in_flight = 0
        self.batches_sent = 0
        self._depth = Gauge("dmb_fanout_queue_depth", description="Batches submitted, not done")
        self._workers_gauge = Gauge("dmb_fanout_workers", description="Workers in this pool")
        self.resize(size)

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def worker_pids(self) -> list[int]:
        pids: list[int] = ray.get([worker.pid.remote() for worker in self._workers])
        return pids

    def resize(self, size: int) -> None:
        if size < 1:
            raise ValueError("the fan-out pool needs at least one worker")
        worker_class: Any = ray.remote(FanoutWorker)
        nodes = alive_node_ids()
        while len(self._workers) < size:
            node_id = nodes[len(self._workers) % len(nodes)]
            self._workers.append(
                worker_class.options(
                    num_cpus=self._cpus,
                    max_restarts=-1,
                    max_task_retries=-1,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=True),
                ).remote()
            )
        del self._workers[size:]  # dropped handles: they finish queued calls, then exit
        self._cycle = itertools.cycle(list(self._workers))
        self.report()

    def report(self) -> None:
        """Set the pool-size gauge; the owner calls it every few seconds too, because a value
        set once can be recorded before this process's metrics export is up, and lost."""
        self._workers_gauge.set(len(self._workers))

    async def run(self, op: FanoutOp, post_ids: list[int], batches: list[list[int]]) -> None:
        """Write every batch (one worker call each) and return when all are done."""
        if not batches:
            return
        assert self._cycle is not None
        origin = tracing.outgoing() or None  # empty unless the event was traced
        refs = [next(self._cycle).write.remote(op, post_ids, batch, origin) for batch in batches]
        self.batches_sent += len(refs)
        self._in_flight += len(refs)
        self._depth.set(self._in_flight)
        try:
            await asyncio.gather(*refs)
        finally:
            self._in_flight -= len(refs)
            self._depth.set(self._in_flight)
