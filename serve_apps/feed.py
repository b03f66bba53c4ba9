"""FeedService deployment: the `dmb.v1.FeedService` home timeline over DeploymentHandle and gRPC."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from dmb.composition import Components, process_components
from dmb.domain.identity import Caller
from dmb.domain.paging import page_from
from dmb.v1 import feed_pb2 as pb
from serve_apps.rpc import serves
from serve_apps.topology import deployment_of


@serves(pb.DESCRIPTOR.services_by_name["FeedService"])
class FeedServiceDeployment:
    def __init__(self, components: Components | None = None) -> None:
        self.components = components or process_components()
        self._home = self.components.home_feed

    async def GetHomeFeed(
        self, request: pb.GetHomeFeedRequest, caller: Caller
    ) -> pb.GetHomeFeedResponse:
        page = await self._home.page(caller, page_from(request.page_size, request.cursor))
        return pb.GetHomeFeedResponse(posts=page.posts, next_cursor=page.next_cursor)


def build_app(args: dict[str, Any]) -> Application:
    return deployment_of(
        FeedServiceDeployment, "FeedService", args, max_ongoing_requests=128
    ).bind()
