"""UserService deployment: the `dmb.v1.UserService` methods over DeploymentHandle and gRPC."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from dmb.composition import Components, process_components
from dmb.domain.identity import Caller
from dmb.domain.users import TOKEN_TYPE, Session
from dmb.v1 import users_pb2 as pb
from serve_apps.rpc import serves
from serve_apps.topology import deployment_of


@serves(pb.DESCRIPTOR.services_by_name["UserService"])
class UserServiceDeployment:
    def __init__(self, components: Components | None = None) -> None:
        self.components = components or process_components()
        self._accounts = self.components.accounts

    async def Register(self, request: pb.RegisterRequest) -> pb.RegisterResponse:
        user = await self._accounts.register(request.username, request.email, request.password)
        return pb.RegisterResponse(user=user)

    async def Login(self, request: pb.LoginRequest) -> pb.LoginResponse:
        session = await self._accounts.login(request.username, request.password)
        return pb.LoginResponse(**_token_fields(session))

    async def Refresh(self, request: pb.RefreshRequest) -> pb.RefreshResponse:
        session = await self._accounts.refresh(request.refresh_token)
        return pb.RefreshResponse(**_token_fields(session))

    async def Logout(self, request: pb.LogoutRequest, caller: Caller) -> pb.LogoutResponse:
        await self._accounts.logout(caller, request.refresh_token)
        return pb.LogoutResponse()

    async def GetUser(self, request: pb.GetUserRequest, caller: Caller) -> pb.GetUserResponse:
        return pb.GetUserResponse(user=await self._accounts.get_user(caller, request.user_id))

    async def SearchUsers(
        self, request: pb.SearchUsersRequest, caller: Caller
    ) -> pb.SearchUsersResponse:
        users, next_cursor = await self.components.user_search.search(
            request.q, request.page_size, request.cursor, reader=caller.user_id
        )
        return pb.SearchUsersResponse(users=users, next_cursor=next_cursor)

    async def GetMe(self, request: pb.GetMeRequest, caller: Caller) -> pb.GetMeResponse:
        return pb.GetMeResponse(user=await self._accounts.get_me(caller))

    async def UpdateProfile(
        self, request: pb.UpdateProfileRequest, caller: Caller
    ) -> pb.UpdateProfileResponse:
        user = await self._accounts.update_profile(
            caller, request.profile, list(request.update_mask.paths)
        )
        return pb.UpdateProfileResponse(user=user)

    async def DeleteAccount(
        self, request: pb.DeleteAccountRequest, caller: Caller
    ) -> pb.DeleteAccountResponse:
        await self.components.account_deletion.delete(caller, request.password)
        return pb.DeleteAccountResponse()

    async def GetUsers(self, request: pb.GetUsersRequest, caller: Caller) -> pb.GetUsersResponse:
        return pb.GetUsersResponse(users=await self._accounts.get_users(request.user_ids))


def _token_fields(session: Session) -> dict[str, Any]:
    return {
        "access_token": session.access.token,
        "refresh_token": session.refresh_token,
        "token_type": TOKEN_TYPE,
        "expires_in": session.access.expires_in,
        "user_id": session.user_id,
    }


def build_app(args: dict[str, Any]) -> Application:
    return deployment_of(UserServiceDeployment, "UserService", args, max_ongoing_requests=64).bind()
