"""The feed application: FeedService (home timeline) and FanoutSupervisor.

FanoutSupervisor owns nothing on the request path: it makes sure the CDC relay and the feed
consumer actors run, and resizes the fan-out pool when an operator edits its `user_config`
(`fanout_workers`), which Serve applies through `reconfigure` without restarting anything.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import serve
from ray.serve import Application

from actors import cdc_relay, feed_consumer
from dmb.domain.feed import HomeFeed
from dmb.domain.identity import Caller
from dmb.domain.paging import page_from
from dmb.domain.posts import Posts
from dmb.v1 import feed_pb2 as pb
from serve_apps.resources import Resources
from serve_apps.rpc import RpcBoundary

SLOT_READY_SECONDS = 120


class FeedServiceDeployment:
    def __init__(self, supervisor: Any = None) -> None:
        self._res = Resources()
        self._home = HomeFeed(
            self._res.settings, self._res.db, self._res.redis, Posts(self._res.db, self._res.redis)
        )
        self._rpc = RpcBoundary(self._res.verifier)
        self._supervisor = supervisor  # held so Serve deploys it with this app

    async def GetHomeFeed(
        self, request: pb.GetHomeFeedRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.GetHomeFeedResponse:
        async def handle(who: Caller) -> pb.GetHomeFeedResponse:
            await self._res.ready()
            page = await self._home.page(who, page_from(request.page_size, request.cursor))
            return pb.GetHomeFeedResponse(posts=page.posts, next_cursor=page.next_cursor)

        return await self._rpc.run(grpc_context, caller, handle)


class FanoutSupervisor:
    def __init__(self) -> None:
        self._relay = cdc_relay.ensure_running()
        # The feed app reports ready only once the slot exists: a change committed before it
        # would never reach Kafka (the slot only holds what happens after its creation).
        if not ray.get(self._relay.wait_ready.remote(SLOT_READY_SECONDS)):
            raise RuntimeError("the CDC relay did not create its replication slot in time")
        self._consumer: Any = None

    def reconfigure(self, config: dict[str, Any]) -> None:
        workers = int(config.get("fanout_workers", 4))
        if self._consumer is None:
            self._consumer = feed_consumer.ensure_running(workers)
        self._consumer.resize.remote(workers)

    async def stats(self) -> dict[str, int]:
        result: dict[str, int] = await self._consumer.stats.remote()
        return result


def build_app(args: dict[str, Any]) -> Application:
    cpus = float(args.get("num_cpus", 1))
    supervisor = serve.deployment(
        name="FanoutSupervisor",
        num_replicas=1,
        user_config={"fanout_workers": int(args.get("fanout_workers", 4))},
        ray_actor_options={"num_cpus": min(cpus, 0.1)},
    )(FanoutSupervisor).bind()
    return serve.deployment(
        name="FeedService",
        max_ongoing_requests=int(args.get("max_ongoing_requests", 128)),
        ray_actor_options={"num_cpus": cpus},
    )(FeedServiceDeployment).bind(supervisor)
