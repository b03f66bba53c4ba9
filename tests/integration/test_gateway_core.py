"""The gateway's request path in-process (no Ray), against the real Redis: IP buckets, proxy
hops, request ids, and what happens when Redis is gone (fail-open or fail-closed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from dmb.domain.identity import Caller
from dmb.settings import Settings
from dmb.v1 import users_pb2
from serve_apps.gateway.core import GatewayCore
from serve_apps.gateway.descriptors import MethodSpec


class EchoLogin:
    """Stands in for the user service: the gateway, not the service, is under test here."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, method: MethodSpec, request: Message, caller: Caller | None) -> Message:
        self.calls += 1
        return users_pb2.LoginResponse(user_id=7, token_type="Bearer")


def _client(settings: Settings, dispatcher: Any) -> Iterator[TestClient]:
    core = GatewayCore(settings, dispatcher)

    async def endpoint(request: Request) -> Response:
        return await core.handle(request)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "PUT"])])
    with TestClient(app) as client:
        yield client


@pytest.fixture
def login_body() -> dict[str, str]:
    return {"username": "someone", "password": "whatever1"}


def test_ip_bucket_limits_each_forwarded_client(
    settings: Settings, login_body: dict[str, str]
) -> None:
    tight = settings.with_overrides({"rate_limit_ip_capacity": 3, "trusted_proxy_hops": 1})
    for client in _client(tight, EchoLogin()):
        addr = f"10.9.{id(client) % 200}.1"
        codes = [
            client.post(
                "/v1/auth/login", json=login_body, headers={"X-Forwarded-For": addr}
            ).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        other = client.post(
            "/v1/auth/login", json=login_body, headers={"X-Forwarded-For": addr + "0"}
        )
        assert other.status_code == 200
        assert other.headers["RateLimit-Limit"] == "3"


def test_request_ids_are_kept_or_made(settings: Settings, login_body: dict[str, str]) -> None:
    for client in _client(settings, EchoLogin()):
        kept = client.post("/v1/auth/login", json=login_body, headers={"X-Request-Id": "abc-123"})
        assert kept.headers["X-Request-Id"] == "abc-123"
        made = client.post("/v1/auth/login", json=login_body, headers={"X-Request-Id": "bad id!"})
        assert made.headers["X-Request-Id"] != "bad id!"
        assert len(made.headers["X-Request-Id"]) == 32


def test_without_redis_the_gateway_fails_open_by_default(
    settings: Settings, login_body: dict[str, str]
) -> None:
    broken = settings.with_overrides(
        {"redis_url": "redis://127.0.0.1:1/0", "store_timeout_seconds": 0.5}
    )
    dispatcher = EchoLogin()
    for client in _client(broken, dispatcher):
        response = client.post("/v1/auth/login", json=login_body)
        assert response.status_code == 200
        assert dispatcher.calls == 1
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["dependencies"]["redis"]["ok"] is False


def test_fail_closed_refuses_with_503(settings: Settings, login_body: dict[str, str]) -> None:
    broken = settings.with_overrides(
        {
            "redis_url": "redis://127.0.0.1:1/0",
            "store_timeout_seconds": 0.5,
            "rate_limit_fail_open": False,
        }
    )
    dispatcher = EchoLogin()
    for client in _client(broken, dispatcher):
        response = client.post("/v1/auth/login", json=login_body)
        assert response.status_code == 503
        assert response.json()["code"] == 14
        assert dispatcher.calls == 0
