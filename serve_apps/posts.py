"""PostService deployment: the `dmb.v1.PostService` methods over DeploymentHandle and gRPC."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from dmb.composition import Components, process_components
from dmb.domain.identity import Caller
from dmb.domain.paging import page_from
from dmb.v1 import posts_pb2 as pb
from serve_apps.rpc import serves
from serve_apps.topology import deployment_of


@serves(pb.DESCRIPTOR.services_by_name["PostService"])
class PostServiceDeployment:
    def __init__(self, components: Components | None = None) -> None:
        self.components = components or process_components()
        self._posts = self.components.posts

    async def CreatePost(
        self, request: pb.CreatePostRequest, caller: Caller
    ) -> pb.CreatePostResponse:
        return pb.CreatePostResponse(post=await self._posts.create(caller, request.content))

    async def GetPost(self, request: pb.GetPostRequest, caller: Caller) -> pb.GetPostResponse:
        return pb.GetPostResponse(post=await self._posts.get(caller, request.post_id))

    async def DeletePost(
        self, request: pb.DeletePostRequest, caller: Caller
    ) -> pb.DeletePostResponse:
        await self._posts.delete(caller, request.post_id)
        return pb.DeletePostResponse()

    async def ListUserPosts(
        self, request: pb.ListUserPostsRequest, caller: Caller
    ) -> pb.ListUserPostsResponse:
        page = page_from(request.page_size, request.cursor)
        found = await self._posts.list_by_author(caller, request.user_id, page)
        return pb.ListUserPostsResponse(posts=found.posts, next_cursor=found.next_cursor)

    async def LikePost(self, request: pb.LikePostRequest, caller: Caller) -> pb.LikePostResponse:
        return pb.LikePostResponse(like_count=await self._posts.like(caller, request.post_id))

    async def UnlikePost(
        self, request: pb.UnlikePostRequest, caller: Caller
    ) -> pb.UnlikePostResponse:
        return pb.UnlikePostResponse(like_count=await self._posts.unlike(caller, request.post_id))

    async def AddComment(
        self, request: pb.AddCommentRequest, caller: Caller
    ) -> pb.AddCommentResponse:
        comment = await self._posts.add_comment(caller, request.post_id, request.content)
        return pb.AddCommentResponse(comment=comment)

    async def ListComments(
        self, request: pb.ListCommentsRequest, caller: Caller
    ) -> pb.ListCommentsResponse:
        page = page_from(request.page_size, request.cursor)
        found = await self._posts.list_comments(caller, request.post_id, page)
        return pb.ListCommentsResponse(comments=found.comments, next_cursor=found.next_cursor)

    async def DeleteComment(
        self, request: pb.DeleteCommentRequest, caller: Caller
    ) -> pb.DeleteCommentResponse:
        await self._posts.delete_comment(caller, request.post_id, request.comment_id)
        return pb.DeleteCommentResponse()

    async def GetPosts(self, request: pb.GetPostsRequest, caller: Caller) -> pb.GetPostsResponse:
        return pb.GetPostsResponse(posts=await self._posts.get_many(request.post_ids, caller))


def build_app(args: dict[str, Any]) -> Application:
    return deployment_of(
        PostServiceDeployment, "PostService", args, max_ongoing_requests=128
    ).bind()
