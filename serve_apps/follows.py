"""FollowService deployment: the `dmb.v1.FollowService` methods over DeploymentHandle and gRPC."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from dmb.composition import Components, process_components
from dmb.domain.identity import Caller
from dmb.domain.paging import page_from
from dmb.v1 import follows_pb2 as pb
from serve_apps.rpc import serves
from serve_apps.topology import deployment_of


@serves(pb.DESCRIPTOR.services_by_name["FollowService"])
class FollowServiceDeployment:
    def __init__(self, components: Components | None = None) -> None:
        self.components = components or process_components()
        self._graph = self.components.follow_graph

    async def Follow(self, request: pb.FollowRequest, caller: Caller) -> pb.FollowResponse:
        await self._graph.follow(caller, request.user_id)
        return pb.FollowResponse()

    async def Unfollow(self, request: pb.UnfollowRequest, caller: Caller) -> pb.UnfollowResponse:
        await self._graph.unfollow(caller, request.user_id)
        return pb.UnfollowResponse()

    async def ListFollowers(
        self, request: pb.ListFollowersRequest, caller: Caller
    ) -> pb.ListFollowersResponse:
        page = page_from(request.page_size, request.cursor)
        found = await self._graph.followers(caller, request.user_id, page)
        return pb.ListFollowersResponse(user_ids=found.ids, next_cursor=found.next_cursor)

    async def ListFollowing(
        self, request: pb.ListFollowingRequest, caller: Caller
    ) -> pb.ListFollowingResponse:
        page = page_from(request.page_size, request.cursor)
        found = await self._graph.following(caller, request.user_id, page)
        return pb.ListFollowingResponse(user_ids=found.ids, next_cursor=found.next_cursor)

    async def BlockUser(self, request: pb.BlockUserRequest, caller: Caller) -> pb.BlockUserResponse:
        await self.components.relationships.block(caller, request.user_id)
        return pb.BlockUserResponse()

    async def UnblockUser(
        self, request: pb.UnblockUserRequest, caller: Caller
    ) -> pb.UnblockUserResponse:
        await self.components.relationships.unblock(caller, request.user_id)
        return pb.UnblockUserResponse()

    async def ListBlocks(
        self, request: pb.ListBlocksRequest, caller: Caller
    ) -> pb.ListBlocksResponse:
        page = page_from(request.page_size, request.cursor)
        found = await self.components.relationships.blocks(caller, page)
        return pb.ListBlocksResponse(user_ids=found.ids, next_cursor=found.next_cursor)

    async def MuteUser(self, request: pb.MuteUserRequest, caller: Caller) -> pb.MuteUserResponse:
        await self.components.relationships.mute(caller, request.user_id)
        return pb.MuteUserResponse()

    async def UnmuteUser(
        self, request: pb.UnmuteUserRequest, caller: Caller
    ) -> pb.UnmuteUserResponse:
        await self.components.relationships.unmute(caller, request.user_id)
        return pb.UnmuteUserResponse()

    async def ListMutes(self, request: pb.ListMutesRequest, caller: Caller) -> pb.ListMutesResponse:
        page = page_from(request.page_size, request.cursor)
        found = await self.components.relationships.mutes(caller, page)
        return pb.ListMutesResponse(user_ids=found.ids, next_cursor=found.next_cursor)

    async def GetStats(self, request: pb.GetStatsRequest, caller: Caller) -> pb.GetStatsResponse:
        stats = await self._graph.stats(caller, request.user_id)
        return pb.GetStatsResponse(
            follower_count=stats.follower_count,
            following_count=stats.following_count,
            is_celebrity=stats.is_celebrity,
        )


def build_app(args: dict[str, Any]) -> Application:
    return deployment_of(
        FollowServiceDeployment, "FollowService", args, max_ongoing_requests=128
    ).bind()
