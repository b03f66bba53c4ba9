"""FollowService deployment: the `dmb.v1.FollowService` methods over DeploymentHandle and gRPC."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from dmb.domain.follows import FollowGraph
from dmb.domain.identity import Caller
from dmb.domain.paging import page_from
from dmb.v1 import follows_pb2 as pb
from serve_apps.resources import Resources
from serve_apps.rpc import RpcBoundary


class FollowServiceDeployment:
    def __init__(self) -> None:
        self._res = Resources()
        self._graph = FollowGraph(self._res.settings, self._res.db)
        self._rpc = RpcBoundary(self._res.verifier)

    async def Follow(
        self, request: pb.FollowRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.FollowResponse:
        async def handle(who: Caller) -> pb.FollowResponse:
            await self._res.ready()
            await self._graph.follow(who, request.user_id)
            return pb.FollowResponse()

        return await self._rpc.run(grpc_context, caller, handle)

    async def Unfollow(
        self, request: pb.UnfollowRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.UnfollowResponse:
        async def handle(who: Caller) -> pb.UnfollowResponse:
            await self._res.ready()
            await self._graph.unfollow(who, request.user_id)
            return pb.UnfollowResponse()

        return await self._rpc.run(grpc_context, caller, handle)

    async def ListFollowers(
        self,
        request: pb.ListFollowersRequest,
        grpc_context: Any = None,
        caller: Caller | None = None,
    ) -> pb.ListFollowersResponse:
        async def handle(who: Caller) -> pb.ListFollowersResponse:
            await self._res.ready()
            page = page_from(request.page_size, request.cursor)
            found = await self._graph.followers(who, request.user_id, page)
            return pb.ListFollowersResponse(user_ids=found.ids, next_cursor=found.next_cursor)

        return await self._rpc.run(grpc_context, caller, handle)

    async def ListFollowing(
        self,
        request: pb.ListFollowingRequest,
        grpc_context: Any = None,
        caller: Caller | None = None,
    ) -> pb.ListFollowingResponse:
        async def handle(who: Caller) -> pb.ListFollowingResponse:
            await self._res.ready()
            page = page_from(request.page_size, request.cursor)
            found = await self._graph.following(who, request.user_id, page)
            return pb.ListFollowingResponse(user_ids=found.ids, next_cursor=found.next_cursor)

        return await self._rpc.run(grpc_context, caller, handle)

    async def GetStats(
        self, request: pb.GetStatsRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.GetStatsResponse:
        async def handle(who: Caller) -> pb.GetStatsResponse:
            await self._res.ready()
            stats = await self._graph.stats(who, request.user_id)
            return pb.GetStatsResponse(
                follower_count=stats.follower_count,
                following_count=stats.following_count,
                is_celebrity=stats.is_celebrity,
            )

        return await self._rpc.run(grpc_context, caller, handle)


def build_app(args: dict[str, Any]) -> Application:
    return serve.deployment(
        name="FollowService",
        max_ongoing_requests=int(args.get("max_ongoing_requests", 128)),
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 1))},
    )(FollowServiceDeployment).bind()
