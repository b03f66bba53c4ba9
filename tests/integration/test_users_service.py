"""UserService through the deployed Serve app: by DeploymentHandle and over real gRPC."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import psycopg
import pytest
import redis
from ray import serve

from dmb.domain.identity import Caller, TokenVerifier
from dmb.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from dmb.settings import Settings
from dmb.stores.redis import create_redis
from dmb.v1 import users_pb2 as pb
from dmb.v1 import users_pb2_grpc
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import grpc_metadata

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def users(serve_system: LocalSystem) -> Any:
    return serve.get_deployment_handle("UserService", app_name="users")


@pytest.fixture(scope="module")
def stub(grpc_channel: grpc.Channel) -> users_pb2_grpc.UserServiceStub:
    return users_pb2_grpc.UserServiceStub(grpc_channel)


def _name() -> str:
    return f"u_{uuid.uuid4().hex[:12]}"


def _register(users: Any, name: str | None = None) -> pb.RegisterResponse:
    name = name or _name()
    request = pb.RegisterRequest(username=name, email=f"{name}@example.com", password=PASSWORD)
    response: pb.RegisterResponse = users.Register.remote(request).result()
    return response


def _login(users: Any, name: str, password: str = PASSWORD) -> pb.LoginResponse:
    response: pb.LoginResponse = users.Login.remote(
        pb.LoginRequest(username=name, password=password)
    ).result()
    return response


def _count_users(database_url: str, name: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM users WHERE username = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def test_register_then_login_issues_a_verifiable_token(users: Any, settings: Settings) -> None:
    name = _name()
    user = _register(users, name).user
    assert user.username == name
    assert user.email == f"{name}@example.com"
    session = _login(users, name)
    assert session.token_type == "Bearer"
    assert session.user_id == user.id
    assert session.expires_in == settings.jwt_access_ttl_seconds
    header = jwt.get_unverified_header(session.access_token)
    assert header["kid"] == settings.jwt_active_kid
    assert header["alg"] == settings.jwt_algorithm
    caller = TokenVerifier(settings).verify_signature(session.access_token)
    assert caller.user_id == user.id
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    assert {"sub", "iat", "exp", "iss", "aud", "jti"} <= claims.keys()


def test_duplicates_are_refused(users: Any) -> None:
    name = _name()
    _register(users, name)
    with pytest.raises(AlreadyExists, match="username"):
        _register(users, name)
    with pytest.raises(AlreadyExists, match="email"):
        users.Register.remote(
            pb.RegisterRequest(username=_name(), email=f"{name}@example.com", password=PASSWORD)
        ).result()


@pytest.mark.parametrize(
    ("username", "email", "password", "field"),
    [
        ("ab", "ok@example.com", PASSWORD, "username"),
        ("Has_Upper", "ok@example.com", PASSWORD, "username"),
        ("x" * 33, "ok@example.com", PASSWORD, "username"),
        ("valid_name", "not-an-email", PASSWORD, "email"),
        ("valid_name", "ok@example.com", "short", "password"),
    ],
)
def test_bad_registrations_change_nothing(
    users: Any, database_url: str, username: str, email: str, password: str, field: str
) -> None:
    unique = f"{username}{uuid.uuid4().hex[:4]}" if username == "valid_name" else username
    with pytest.raises(InvalidArgument, match=field):
        users.Register.remote(
            pb.RegisterRequest(username=unique, email=email, password=password)
        ).result()
    assert _count_users(database_url, unique) == 0


def test_wrong_password_and_unknown_user_answer_the_same(users: Any) -> None:
    name = _name()
    _register(users, name)
    with pytest.raises(Unauthenticated) as wrong_password:
        _login(users, name, "not the password")
    with pytest.raises(Unauthenticated) as unknown_user:
        _login(users, _name())
    assert str(wrong_password.value.message) == str(unknown_user.value.message)


def test_refresh_rotates_and_reuse_revokes_the_whole_chain(users: Any) -> None:
    name = _name()
    _register(users, name)
    first = _login(users, name)
    second = users.Refresh.remote(pb.RefreshRequest(refresh_token=first.refresh_token)).result()
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    third = users.Refresh.remote(pb.RefreshRequest(refresh_token=second.refresh_token)).result()
    with pytest.raises(Unauthenticated, match="already used"):
        users.Refresh.remote(pb.RefreshRequest(refresh_token=first.refresh_token)).result()
    with pytest.raises(Unauthenticated):  # the newest token of the chain is revoked too
        users.Refresh.remote(pb.RefreshRequest(refresh_token=third.refresh_token)).result()
    other_login = _login(users, name)  # other sessions are untouched
    users.Refresh.remote(pb.RefreshRequest(refresh_token=other_login.refresh_token)).result()


def test_logout_denylists_the_access_token_and_revokes_the_refresh_token(
    users: Any, settings: Settings
) -> None:
    name = _name()
    _register(users, name)
    session = _login(users, name)
    verifier = TokenVerifier(settings, create_redis(settings))
    caller = verifier.verify_signature(session.access_token)
    users.Logout.remote(
        pb.LogoutRequest(refresh_token=session.refresh_token), caller=caller
    ).result()

    import asyncio

    with pytest.raises(Unauthenticated, match="revoked"):
        asyncio.run(verifier.verify(session.access_token))
    with pytest.raises(Unauthenticated):
        users.Refresh.remote(pb.RefreshRequest(refresh_token=session.refresh_token)).result()


def test_get_user_hides_email_from_others(users: Any) -> None:
    me = _register(users).user
    other = _register(users).user
    as_me = Caller(user_id=me.id, jti="t", expires_at=0)
    assert users.GetUser.remote(pb.GetUserRequest(user_id=me.id), caller=as_me).result().user.email
    seen = users.GetUser.remote(pb.GetUserRequest(user_id=other.id), caller=as_me).result().user
    assert seen.username == other.username
    assert seen.email == ""
    with pytest.raises(NotFound):
        users.GetUser.remote(pb.GetUserRequest(user_id=1), caller=as_me).result()
    batch = users.GetUsers.remote(
        pb.GetUsersRequest(user_ids=[me.id, other.id, 1]), caller=as_me
    ).result()
    assert {u.id for u in batch.users} == {me.id, other.id}


def test_grpc_ingress_requires_the_same_jwt(
    users: Any, stub: users_pb2_grpc.UserServiceStub, issue_token: Callable[[int], str]
) -> None:
    name = _name()
    registered = stub.Register(
        pb.RegisterRequest(username=name, email=f"{name}@example.com", password=PASSWORD),
        metadata=grpc_metadata("users"),
    )
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetUser(pb.GetUserRequest(user_id=registered.user.id), metadata=grpc_metadata("users"))
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as forged:
        stub.GetUser(
            pb.GetUserRequest(user_id=registered.user.id),
            metadata=grpc_metadata("users", "not.a.jwt"),
        )
    assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
    token = stub.Login(
        pb.LoginRequest(username=name, password=PASSWORD), metadata=grpc_metadata("users")
    ).access_token
    me = stub.GetUser(
        pb.GetUserRequest(user_id=registered.user.id), metadata=grpc_metadata("users", token)
    )
    assert me.user.email == f"{name}@example.com"
    with pytest.raises(grpc.RpcError) as duplicate:
        stub.Register(
            pb.RegisterRequest(username=name, email=f"{name}@example.com", password=PASSWORD),
            metadata=grpc_metadata("users"),
        )
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as unknown:
        stub.GetUser(pb.GetUserRequest(user_id=1), metadata=grpc_metadata("users", token))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert issue_token(registered.user.id)


def test_over_grpc_a_logged_out_token_stays_refused_after_flushall(
    stub: users_pb2_grpc.UserServiceStub, settings: Settings
) -> None:
    """The gRPC ingress checks revocation itself (no gateway in front): Postgres decides when
    Redis has lost the cached answer."""
    name = _name()
    stub.Register(
        pb.RegisterRequest(username=name, email=f"{name}@example.com", password=PASSWORD),
        metadata=grpc_metadata("users"),
    )
    session = stub.Login(
        pb.LoginRequest(username=name, password=PASSWORD), metadata=grpc_metadata("users")
    )
    stub.Logout(
        pb.LogoutRequest(refresh_token=session.refresh_token),
        metadata=grpc_metadata("users", session.access_token),
    )
    assert settings.redis_url is not None
    with redis.Redis.from_url(settings.redis_url.get_secret_value()) as client:
        client.flushall()
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetUser(
            pb.GetUserRequest(user_id=session.user_id),
            metadata=grpc_metadata("users", session.access_token),
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in str(refused.value.details())
