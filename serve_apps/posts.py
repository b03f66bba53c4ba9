"""PostService deployment: the `dmb.v1.PostService` methods over DeploymentHandle and gRPC.

Also makes sure the cluster's counter flusher actor runs (idempotent across replicas).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from actors import counter_flusher
from dmb.domain.identity import Caller
from dmb.domain.paging import page_from
from dmb.domain.posts import Posts
from dmb.v1 import posts_pb2 as pb
from serve_apps.resources import Resources
from serve_apps.rpc import RpcBoundary


class PostServiceDeployment:
    def __init__(self, start_flusher: bool = True) -> None:
        self._res = Resources()
        self._posts = Posts(self._res.db, self._res.redis)
        self._rpc = RpcBoundary(self._res.verifier)
        # Outside Ray (the monolith baseline) the caller runs Counters.flush itself.
        self._flusher = counter_flusher.ensure_running() if start_flusher else None

    @property
    def posts(self) -> Posts:
        return self._posts

    async def CreatePost(
        self, request: pb.CreatePostRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.CreatePostResponse:
        async def handle(who: Caller) -> pb.CreatePostResponse:
            await self._res.ready()
            return pb.CreatePostResponse(post=await self._posts.create(who, request.content))

        return await self._rpc.run(grpc_context, caller, handle)

    async def GetPost(
        self, request: pb.GetPostRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.GetPostResponse:
        async def handle(who: Caller) -> pb.GetPostResponse:
            await self._res.ready()
            return pb.GetPostResponse(post=await self._posts.get(who, request.post_id))

        return await self._rpc.run(grpc_context, caller, handle)

    async def DeletePost(
        self, request: pb.DeletePostRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.DeletePostResponse:
        async def handle(who: Caller) -> pb.DeletePostResponse:
            await self._res.ready()
            await self._posts.delete(who, request.post_id)
            return pb.DeletePostResponse()

        return await self._rpc.run(grpc_context, caller, handle)

    async def ListUserPosts(
        self,
        request: pb.ListUserPostsRequest,
        grpc_context: Any = None,
        caller: Caller | None = None,
    ) -> pb.ListUserPostsResponse:
        async def handle(who: Caller) -> pb.ListUserPostsResponse:
            await self._res.ready()
            page = page_from(request.page_size, request.cursor)
            found = await self._posts.list_by_author(who, request.user_id, page)
            return pb.ListUserPostsResponse(posts=found.posts, next_cursor=found.next_cursor)

        return await self._rpc.run(grpc_context, caller, handle)

    async def LikePost(
        self, request: pb.LikePostRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.LikePostResponse:
        async def handle(who: Caller) -> pb.LikePostResponse:
            await self._res.ready()
            return pb.LikePostResponse(like_count=await self._posts.like(who, request.post_id))

        return await self._rpc.run(grpc_context, caller, handle)

    async def UnlikePost(
        self, request: pb.UnlikePostRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.UnlikePostResponse:
        async def handle(who: Caller) -> pb.UnlikePostResponse:
            await self._res.ready()
            return pb.UnlikePostResponse(like_count=await self._posts.unlike(who, request.post_id))

        return await self._rpc.run(grpc_context, caller, handle)

    async def AddComment(
        self, request: pb.AddCommentRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.AddCommentResponse:
        async def handle(who: Caller) -> pb.AddCommentResponse:
            await self._res.ready()
            comment = await self._posts.add_comment(who, request.post_id, request.content)
            return pb.AddCommentResponse(comment=comment)

        return await self._rpc.run(grpc_context, caller, handle)

    async def ListComments(
        self,
        request: pb.ListCommentsRequest,
        grpc_context: Any = None,
        caller: Caller | None = None,
    ) -> pb.ListCommentsResponse:
        async def handle(who: Caller) -> pb.ListCommentsResponse:
            await self._res.ready()
            page = page_from(request.page_size, request.cursor)
            found = await self._posts.list_comments(who, request.post_id, page)
            return pb.ListCommentsResponse(comments=found.comments, next_cursor=found.next_cursor)

        return await self._rpc.run(grpc_context, caller, handle)

    async def DeleteComment(
        self,
        request: pb.DeleteCommentRequest,
        grpc_context: Any = None,
        caller: Caller | None = None,
    ) -> pb.DeleteCommentResponse:
        async def handle(who: Caller) -> pb.DeleteCommentResponse:
            await self._res.ready()
            await self._posts.delete_comment(who, request.post_id, request.comment_id)
            return pb.DeleteCommentResponse()

        return await self._rpc.run(grpc_context, caller, handle)

    async def GetPosts(
        self, request: pb.GetPostsRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.GetPostsResponse:
        async def handle(who: Caller) -> pb.GetPostsResponse:
            await self._res.ready()
            posts = await self._posts.get_many(request.post_ids, who)
            return pb.GetPostsResponse(posts=posts)

        return await self._rpc.run(grpc_context, caller, handle)


def build_app(args: dict[str, Any]) -> Application:
    return serve.deployment(
        name="PostService",
        max_ongoing_requests=int(args.get("max_ongoing_requests", 128)),
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 1))},
    )(PostServiceDeployment).bind()
