"""The pipeline's Serve application: PipelineSupervisor, the one place its actors start.

A Serve deployment, so that KubeRay's serveConfigV2 (and `dmb up`, which applies the same kind of
config) brings the pipeline up with the services, and an operator resizes it by editing that
config. Nothing here is on the request path.

The supervisor starts the CDC relay, the counter flusher and the feed consumer (with its fan-out
pool) as named, detached actors that Ray restarts when they die, and keeps the pool at the size
an operator sets in its `user_config` (`fanout_workers`; without one, DMB_FANOUT_WORKERS): Serve
applies an edited config through `reconfigure`, without restarting anything. Creating the
actors is idempotent, so a restarted supervisor finds the running ones.
"""

from __future__ import annotations

import contextlib
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from actors import cdc_relay, counter_flusher, feed_consumer
from actors.background import NAMESPACE
from dmb.composition import process_components

PIPELINE = (feed_consumer.NAME, cdc_relay.NAME, counter_flusher.NAME)  # stopped in this order


class PipelineSupervisor:
    def __init__(self) -> None:
        self._settings = process_components().settings
        self._relay = cdc_relay.start()
        self._flusher = counter_flusher.start()
        self._consumer = feed_consumer.start(self._settings.fanout_workers)
        self._consumer.resize.remote(self._settings.fanout_workers)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """An operator's edit of the Serve config: resize the fan-out pool."""
        workers = int(config.get("fanout_workers", self._settings.fanout_workers))
        self._consumer.resize.remote(workers)

    async def stats(self) -> dict[str, int]:
        result: dict[str, int] = await self._consumer.stats.remote()
        return result


def build_app(args: dict[str, Any]) -> Application:
    return serve.deployment(
        name="PipelineSupervisor",
        num_replicas=1,
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 0.1))},
    )(PipelineSupervisor).bind()


def stop_pipeline(timeout: float = 15.0) -> None:
    """Stop the pipeline's detached actors for good (`dmb down`, the end of a test run): each
    loop first finishes cleanly, then the actor is removed so that Ray does not restart it."""
    for name in PIPELINE:
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:  # never started
            continue
        with contextlib.suppress(Exception):  # a dead or stuck actor is killed all the same
            ray.get(actor.shutdown.remote(), timeout=timeout)
        ray.kill(actor, no_restart=True)
