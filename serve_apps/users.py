"""UserService deployment: the `dmb.v1.UserService` methods over DeploymentHandle and gRPC."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from dmb.domain.identity import Caller
from dmb.domain.users import TOKEN_TYPE, Session, UserAccounts
from dmb.v1 import users_pb2 as pb
from serve_apps.resources import Resources
from serve_apps.rpc import RpcBoundary


class UserServiceDeployment:
    def __init__(self) -> None:
        self._res = Resources()
        self._accounts = UserAccounts(self._res.settings, self._res.db, self._res.redis)
        self._rpc = RpcBoundary(self._res.verifier)

    async def Register(
        self, request: pb.RegisterRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.RegisterResponse:
        async def handle() -> pb.RegisterResponse:
            await self._res.ready()
            user = await self._accounts.register(request.username, request.email, request.password)
            return pb.RegisterResponse(user=user)

        return await self._rpc.run_public(grpc_context, handle)

    async def Login(
        self, request: pb.LoginRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.LoginResponse:
        async def handle() -> pb.LoginResponse:
            await self._res.ready()
            session = await self._accounts.login(request.username, request.password)
            return pb.LoginResponse(**_token_fields(session))

        return await self._rpc.run_public(grpc_context, handle)

    async def Refresh(
        self, request: pb.RefreshRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.RefreshResponse:
        async def handle() -> pb.RefreshResponse:
            await self._res.ready()
            session = await self._accounts.refresh(request.refresh_token)
            return pb.RefreshResponse(**_token_fields(session))

        return await self._rpc.run_public(grpc_context, handle)

    async def Logout(
        self, request: pb.LogoutRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.LogoutResponse:
        async def handle(who: Caller) -> pb.LogoutResponse:
            await self._res.ready()
            await self._accounts.logout(who, request.refresh_token)
            return pb.LogoutResponse()

        return await self._rpc.run(grpc_context, caller, handle)

    async def GetUser(
        self, request: pb.GetUserRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.GetUserResponse:
        async def handle(who: Caller) -> pb.GetUserResponse:
            await self._res.ready()
            return pb.GetUserResponse(user=await self._accounts.get_user(who, request.user_id))

        return await self._rpc.run(grpc_context, caller, handle)

    async def GetUsers(
        self, request: pb.GetUsersRequest, grpc_context: Any = None, caller: Caller | None = None
    ) -> pb.GetUsersResponse:
        async def handle(who: Caller) -> pb.GetUsersResponse:
            await self._res.ready()
            return pb.GetUsersResponse(users=await self._accounts.get_users(request.user_ids))

        return await self._rpc.run(grpc_context, caller, handle)


def _token_fields(session: Session) -> dict[str, Any]:
    return {
        "access_token": session.access.token,
        "refresh_token": session.refresh_token,
        "token_type": TOKEN_TYPE,
        "expires_in": session.access.expires_in,
        "user_id": session.user_id,
    }


def build_app(args: dict[str, Any]) -> Application:
    return serve.deployment(
        name="UserService",
        max_ongoing_requests=int(args.get("max_ongoing_requests", 64)),
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 1))},
    )(UserServiceDeployment).bind()
