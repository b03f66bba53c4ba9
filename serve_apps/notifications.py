"""NotificationService deployment: the `dmb.v1.NotificationService` methods over DeploymentHandle
and gRPC."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from dmb.composition import Components, process_components
from dmb.domain.identity import Caller
from dmb.domain.paging import page_from
from dmb.v1 import notifications_pb2 as pb
from serve_apps.rpc import serves
from serve_apps.topology import deployment_of


@serves(pb.DESCRIPTOR.services_by_name["NotificationService"])
class NotificationServiceDeployment:
    def __init__(self, components: Components | None = None) -> None:
        self.components = components or process_components()
        self._notifications = self.components.notifications

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, caller: Caller
    ) -> pb.ListNotificationsResponse:
        page = await self._notifications.page(caller, page_from(request.page_size, request.cursor))
        return pb.ListNotificationsResponse(
            notifications=page.items, next_cursor=page.next_cursor, unread_count=page.unread_count
        )

    async def MarkNotificationsRead(
        self, request: pb.MarkNotificationsReadRequest, caller: Caller
    ) -> pb.MarkNotificationsReadResponse:
        unread = await self._notifications.mark_read(caller, request.up_to_id)
        return pb.MarkNotificationsReadResponse(unread_count=unread)


def build_app(args: dict[str, Any]) -> Application:
    return deployment_of(
        NotificationServiceDeployment, "NotificationService", args, max_ongoing_requests=128
    ).bind()
