"""The pipeline's Serve application: PipelineSupervisor, the one place its actors start.

A Serve deployment, so that KubeRay's serveConfigV2 (and `dmb up`, which applies the same kind of
config) brings the pipeline up with the services, and an operator resizes it by editing that
config. Nothing here is on the request path.

The supervisor starts the CDC relay, the counter flusher, the notifications consumer and the
group of feed consumers (each with its share of the fan-out workers) as named, detached actors
that Ray restarts when they die, and keeps them at the sizes an operator sets in its
`user_config` (`fanout_workers`, `feed_consumers`; without one, DMB_FANOUT_WORKERS and
DMB_FEED_CONSUMERS): Serve applies an edited config through `reconfigure`, without restarting
anything. Serve also calls
`check_health` every few seconds; the supervisor then puts back whatever is missing or the wrong
size (an actor that was killed for good, a consumer that came back before the supervisor did).
Creating the actors is idempotent, so a restarted supervisor finds the running ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from actors import cdc_relay, counter_flusher, feed_consumer, notification_consumer
from actors.background import NAMESPACE
from actors.pipeline_size import PipelineSize
from dmb.composition import process_components

HEALTH_CHECK_SECONDS = 2.0
log = logging.getLogger("dmb.supervisor")


class PipelineSupervisor:
    def __init__(self) -> None:
        self._settings = process_components().settings
        self._size = PipelineSize.configured(None, self._settings)
        self._consumers: list[Any] = []
        self._apply()

    def reconfigure(self, config: dict[str, Any]) -> None:
        """An operator's edit of the Serve config: resize the consumer group and the pool."""
        self._size = PipelineSize.configured(config, self._settings)
        self._apply()

    def share_of(self, index: int) -> int:
        """How many fan-out workers consumer `index` owns now (0: it should not exist)."""
        shares = self._size.shares()
        return shares[index] if index < len(shares) else 0

    async def check_health(self) -> None:
        """Serve's periodic health check, used to reconcile: it never fails the replica. On a
        thread: reconciling waits on Ray (actor lookups, a leaving consumer's clean stop), and
        the replica's event loop must keep answering `share_of` and `stats` meanwhile."""
        try:
            await asyncio.to_thread(self._apply)
        except Exception:
            log.exception("could not reconcile the pipeline; trying again at the next check")

    async def stats(self) -> dict[str, int]:
        """The consumer group's totals (handled events, workers, batches in flight)."""
        keys = ("handled", "workers", "batches", "in_flight")
        totals = {"consumers": len(self._consumers), **dict.fromkeys(keys, 0)}
        for stats in [await consumer.stats.remote() for consumer in self._consumers]:
            for key in keys:
                totals[key] += int(stats[key])
        return totals

    def _apply(self) -> None:
        cdc_relay.start()
        counter_flusher.start()
        notification_consumer.start()
        shares = self._size.shares()
        self._consumers = [feed_consumer.start(index, share) for index, share in enumerate(shares)]
        for consumer, share in zip(self._consumers, shares, strict=True):
            consumer.resize.remote(share)
        wanted = {feed_consumer.name_of(index) for index in range(len(shares))}
        for name in _running_consumers() - wanted:  # the group shrank
            _stop(name)


def _running_consumers() -> set[str]:
    prefix = feed_consumer.name_of(0).removesuffix("0")
    return {
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == NAMESPACE and actor["name"].startswith(prefix)
    }


def _stop(name: str, timeout: float = 15.0) -> bool:
    """Stop the named actor for good: its loop finishes cleanly first (a consumer leaves its
    group, so the others take its partitions at once), then Ray removes it without a restart.
    False when there was no such actor."""
    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    with contextlib.suppress(Exception):  # a dead or stuck actor is killed all the same
        ray.get(actor.shutdown.remote(), timeout=timeout)
    ray.kill(actor, no_restart=True)
    return True


def stop_pipeline() -> None:
    """Stop every pipeline actor for good (`dmb down`, the end of a test run)."""
    names = [*sorted(_running_consumers()), notification_consumer.NAME]
    for name in [*names, cdc_relay.NAME, counter_flusher.NAME]:
        _stop(name)


def build_app(args: dict[str, Any]) -> Application:
    return serve.deployment(
        name="PipelineSupervisor",
        num_replicas=1,
        health_check_period_s=HEALTH_CHECK_SECONDS,
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 0.1))},
    )(PipelineSupervisor).bind()
