"""Password guessing against one account, over HTTP and gRPC: free failures, then locks that
double, refused before any password is checked, the same for unknown usernames; and the gRPC
ingress charged to the same token buckets as the gateway."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
import requests
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dmb.settings import Settings
from dmb.v1 import users_pb2 as pb
from dmb.v1 import users_pb2_grpc
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import grpc_metadata

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def base(serve_system: LocalSystem) -> str:
    return str(serve_system.addresses()["http"])


@pytest.fixture(scope="module")
def stub(grpc_channel: grpc.Channel) -> users_pb2_grpc.UserServiceStub:
    return users_pb2_grpc.UserServiceStub(grpc_channel)


def _register(base: str) -> str:
    name = f"lb_{uuid.uuid4().hex[:12]}"
    created = requests.post(
        f"{base}/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    return name


def _login(base: str, name: str, password: str) -> requests.Response:
    return requests.post(
        f"{base}/v1/auth/login", json={"username": name, "password": password}, timeout=30
    )


def _retry_delay(details: list[dict[str, Any]]) -> str:
    (retry,) = [d for d in details if d["@type"].endswith("google.rpc.RetryInfo")]
    return str(retry["retryDelay"])


def test_failed_logins_lock_the_account_with_doubling_waits(base: str, settings: Settings) -> None:
    name = _register(base)
    for _ in range(settings.login_free_failures):
        assert _login(base, name, "wrong password!").status_code == 401
    locked = _login(base, name, "wrong password!")
    assert locked.status_code == 429, locked.text
    wait = int(locked.headers["Retry-After"])
    assert wait >= 1
    assert locked.json()["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert _retry_delay(locked.json()["details"]).endswith("s")
    # While locked, even the right password is refused: a guess then tells nothing.
    assert _login(base, name, PASSWORD).status_code == 429
    time.sleep(wait + 0.3)
    # One more failure after the lock: locked again, for twice as long.
    again = _login(base, name, "wrong password!")
    assert again.status_code == 429
    assert int(again.headers["Retry-After"]) >= 2 * wait
    time.sleep(int(again.headers["Retry-After"]) + 0.3)
    assert _login(base, name, PASSWORD).status_code == 200  # clears the count
    assert _login(base, name, "wrong password!").status_code == 401


def test_unknown_usernames_are_locked_the_same_way(base: str, settings: Settings) -> None:
    """The answers must not tell which usernames exist."""
    name = f"nobody_{uuid.uuid4().hex[:10]}"
    statuses = [
        _login(base, name, "wrong password!").status_code
        for _ in range(settings.login_free_failures + 1)
    ]
    assert statuses == [401] * settings.login_free_failures + [429]


def test_login_over_grpc_is_backed_off_with_retry_info(
    base: str, stub: users_pb2_grpc.UserServiceStub, settings: Settings
) -> None:
    name = _register(base)
    request = pb.LoginRequest(username=name, password="wrong password!")
    codes = []
    for _ in range(settings.login_free_failures + 1):
        with pytest.raises(grpc.RpcError) as refused:
            stub.Login(request, metadata=grpc_metadata("users"), timeout=30)
        codes.append(refused.value.code())
    assert codes[:-1] == [grpc.StatusCode.UNAUTHENTICATED] * settings.login_free_failures
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(refused.value)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.seconds >= 1


def test_the_grpc_ingress_charges_the_user_bucket(
    stub: users_pb2_grpc.UserServiceStub, settings: Settings, issue_token: Callable[[int], str]
) -> None:
    """Before, a gRPC client was never rate-limited: the buckets lived in the HTTP gateway only."""
    user_id = uuid.uuid4().int % 10**12
    metadata = grpc_metadata("users", issue_token(user_id))

    def call(_: int) -> grpc.StatusCode:
        try:
            stub.GetUser(pb.GetUserRequest(user_id=1), metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    seen: list[grpc.StatusCode] = []
    with ThreadPoolExecutor(25) as pool:  # concurrent rounds: faster than the bucket refills
        for _ in range(2 * (settings.rate_limit_user_capacity // 25 + 1)):
            seen += pool.map(call, range(25))
            if grpc.StatusCode.RESOURCE_EXHAUSTED in seen:
                break
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in seen
    answered = [code for code in seen if code is not grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert set(answered) <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}
    assert len(answered) >= settings.rate_limit_user_capacity
