"""The gateway's whole request path in-process (no Ray) against the real Redis: every response's
rate-limit headers, auth failures, error mapping, request ids, Redis outages (fail-open and
fail-closed), and a test-only service exposed by its descriptors alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from dmb.composition import Components
from dmb.domain.identity import Caller, denylist_key
from dmb.errors import FieldViolation, InvalidFields, NotFound, Unavailable
from dmb.settings import Settings
from dmb.stores.read_your_writes import WritePosition, position_key
from dmb.v1 import users_pb2
from serve_apps.gateway.core import GatewayCore
from serve_apps.gateway.descriptors import MethodSpec
from tests.protos.compile import compile_descriptor_set

VERBS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "ARCHIVE"]
LOGIN = {"username": "someone", "password": "whatever1"}


class Recorder:
    """Stands in for the services: the gateway, not the services, is under test here."""

    def __init__(self, answer: Callable[[MethodSpec, Message, Caller | None], Any]) -> None:
        self.calls: list[tuple[str, Message, Caller | None]] = []
        self.positions: list[WritePosition | None] = []
        self._answer = answer

    async def call(
        self,
        method: MethodSpec,
        request: Message,
        caller: Caller | None,
        write_position: WritePosition | None,
    ) -> Message:
        self.calls.append((method.full_name, request, caller))
        self.positions.append(write_position)
        reply = self._answer(method, request, caller)
        if asyncio.iscoroutine(reply):
            reply = await reply
        assert isinstance(reply, Message)
        return reply


class CountingMetrics:
    def __init__(self) -> None:
        self.rejected = 0
        self.redis_failures = 0
        self.requests: list[tuple[str, str, int]] = []

    def rate_limited(self) -> None:
        self.rejected += 1

    def redis_failed(self) -> None:
        self.redis_failures += 1

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.requests.append((route, method, status))


def _login_reply(method: MethodSpec, request: Message, caller: Caller | None) -> Message:
    return users_pb2.LoginResponse(user_id=7, token_type="Bearer")


def _echo_caller(method: MethodSpec, request: Message, caller: Caller | None) -> Message:
    """Any method: the output type, with the caller's id where the reply has a user id."""
    reply = method.output_type()
    if caller is not None and "user_id" in reply.DESCRIPTOR.fields_by_name:
        reply.user_id = caller.user_id  # type: ignore[attr-defined]
    return reply


def _client(
    settings: Settings,
    dispatcher: Any,
    metrics: Any = None,
    files: descriptor_pb2.FileDescriptorSet | None = None,
) -> Iterator[TestClient]:
    core = GatewayCore.assemble(
        Components(settings), dispatcher, descriptor_set=files, metrics=metrics
    )

    async def endpoint(request: Request) -> Response:
        return await core.handle(request)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=VERBS)])
    with TestClient(app) as client:
        yield client


def _from(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def _fresh_ip() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


@pytest.fixture
def proxied(settings: Settings) -> Settings:
    """One trusted proxy hop, so each test picks its own client address (its own IP bucket)."""
    return settings.with_overrides({"trusted_proxy_hops": 1})


def test_ip_bucket_limits_each_forwarded_client(settings: Settings) -> None:
    tight = settings.with_overrides({"rate_limit_ip_capacity": 3, "trusted_proxy_hops": 1})
    metrics = CountingMetrics()
    for client in _client(tight, Recorder(_login_reply), metrics):
        addr = _fresh_ip()
        replies = [client.post("/v1/auth/login", json=LOGIN, headers=_from(addr)) for _ in range(4)]
        assert [r.status_code for r in replies] == [200, 200, 200, 429]
        assert [r.headers["RateLimit-Remaining"] for r in replies] == ["2", "1", "0", "0"]
        assert int(replies[-1].headers["Retry-After"]) >= 1
        assert replies[-1].json()["code"] == 8
        assert metrics.rejected == 1
        route = ("/v1/auth/login", "POST")
        assert metrics.requests == [(*route, 200)] * 3 + [(*route, 429)]  # once per request
        other = client.post("/v1/auth/login", json=LOGIN, headers=_from(_fresh_ip()))
        assert other.status_code == 200
        assert other.headers["RateLimit-Limit"] == "3"


def test_every_refusal_carries_rate_limit_headers_and_spends_a_token(proxied: Settings) -> None:
    # Next to no refill: at the session's 10 tokens/s, a machine slow enough to spend 100 ms
    # between two of these requests gave a token back and the count came out one short.
    slow_refill = proxied.with_overrides({"rate_limit_ip_refill_per_sec": 0.001})
    for client in _client(slow_refill, Recorder(_login_reply)):
        addr = _fresh_ip()
        missing = client.get("/v1/nothing/here", headers=_from(addr))
        assert missing.status_code == 404
        assert missing.json() == {
            "code": 5,
            "message": "no route for GET /v1/nothing/here",
            "details": [],
        }
        wrong_verb = client.put("/v1/posts", headers=_from(addr))
        assert wrong_verb.status_code == 405
        assert wrong_verb.headers["Allow"] == "POST"
        assert wrong_verb.json()["code"] == 12
        no_token = client.get("/v1/feed", headers=_from(addr))
        assert no_token.status_code == 401
        assert no_token.headers["WWW-Authenticate"] == 'Bearer realm="dmb"'
        bad_token = client.get("/v1/feed", headers={**_from(addr), "Authorization": "Bearer x.y.z"})
        assert bad_token.status_code == 401
        assert 'error="invalid_token"' in bad_token.headers["WWW-Authenticate"]
        health = client.get("/healthz", headers=_from(addr))
        document = client.get("/openapi.json", headers=_from(addr))
        remaining = [
            int(r.headers["RateLimit-Remaining"])
            for r in (missing, wrong_verb, no_token, bad_token, health, document)
        ]
        assert remaining == sorted(remaining, reverse=True)
        assert remaining[0] - remaining[-1] == 5  # one token each, from this address's bucket


def test_the_verified_subject_is_the_caller_and_its_bucket_answers(
    proxied: Settings, issue_token: Callable[[int], str]
) -> None:
    tight = proxied.with_overrides({"rate_limit_user_capacity": 2})
    dispatcher = Recorder(_echo_caller)
    user_id = uuid.uuid4().int % 10**12
    token = issue_token(user_id)
    for client in _client(tight, dispatcher):
        addr = _fresh_ip()
        headers = {**_from(addr), "Authorization": f"Bearer {token}"}
        replies = [client.get("/v1/users/5/stats", headers=headers) for _ in range(3)]
        assert [r.status_code for r in replies] == [200, 200, 429]
        assert replies[0].headers["RateLimit-Limit"] == "2"
        assert [r.headers["RateLimit-Remaining"] for r in replies] == ["1", "0", "0"]
        # The user's bucket is empty wherever the token is used from.
        elsewhere = client.get("/v1/users/5/stats", headers={**headers, **_from(_fresh_ip())})
        assert elsewhere.status_code == 429
        # The anonymous bucket of the same address is another bucket.
        assert client.post("/v1/auth/login", json=LOGIN, headers=_from(addr)).status_code == 200
    name, request, caller = dispatcher.calls[0]
    assert name == "dmb.v1.FollowService.GetStats"
    assert request.user_id == 5  # type: ignore[attr-defined]
    assert caller is not None
    assert caller.user_id == user_id
    assert len(dispatcher.calls) == 3  # two stats calls and the login


def test_the_caller_carries_its_latest_write_position_to_the_service(
    proxied: Settings, issue_token: Callable[[int], str], redis_url: str
) -> None:
    writer, reader = (uuid.uuid4().int % 10**12 for _ in range(2))
    dispatcher = Recorder(_echo_caller)
    with redis.Redis.from_url(redis_url) as client:
        client.set(position_key(writer), b"0/3000060", ex=60)
    for client in _client(proxied, dispatcher):
        for user in (writer, reader):
            headers = {**_from(_fresh_ip()), "Authorization": f"Bearer {issue_token(user)}"}
            assert client.get("/v1/users/5/stats", headers=headers).status_code == 200
    # Read in the rate limiter's round trip: the service needs no Redis lookup of its own.
    assert dispatcher.positions == [WritePosition(writer, "0/3000060"), WritePosition(reader, None)]


def test_a_logged_out_token_is_refused(
    proxied: Settings, issue_token: Callable[[int], str], redis_url: str
) -> None:
    token = issue_token(11)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    dispatcher = Recorder(_echo_caller)
    with redis.Redis.from_url(redis_url) as client:
        client.set(denylist_key(jti), b"1", ex=60)
    for client in _client(proxied, dispatcher):
        refused = client.get(
            "/v1/users/11", headers={**_from(_fresh_ip()), "Authorization": f"Bearer {token}"}
        )
        assert refused.status_code == 401
        assert refused.json()["message"] == "access token has been revoked"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "RateLimit-Remaining" in refused.headers
    assert dispatcher.calls == []


def test_service_failures_map_to_http(proxied: Settings, issue_token: Callable[[int], str]) -> None:
    async def fail(method: MethodSpec, request: Message, caller: Caller | None) -> Message:
        post_id = request.post_id  # type: ignore[attr-defined]
        if post_id == 1:
            raise NotFound("post 1 does not exist")
        if post_id == 2:
            raise Unavailable("postgres is unavailable")
        if post_id == 3:
            await asyncio.sleep(10)
        raise RuntimeError("secret internals")

    quick = proxied.with_overrides({"request_timeout_seconds": 0.3})
    headers = {**_from(_fresh_ip()), "Authorization": f"Bearer {issue_token(3)}"}
    for client in _client(quick, Recorder(fail)):
        got = {i: client.get(f"/v1/posts/{i}", headers=headers) for i in (1, 2, 3, 4)}
    assert (got[1].status_code, got[1].json()["code"]) == (404, 5)
    assert got[1].json()["message"] == "post 1 does not exist"
    assert (got[2].status_code, got[2].json()["code"]) == (503, 14)
    assert (got[3].status_code, got[3].json()["code"]) == (504, 4)
    assert (got[4].status_code, got[4].json()["code"]) == (500, 13)
    assert "secret" not in got[4].text
    assert got[4].headers["X-Request-Id"] in got[4].json()["message"]
    assert all("RateLimit-Limit" in r.headers for r in got.values())


def test_bodies_over_the_limit_get_413(
    proxied: Settings, issue_token: Callable[[int], str]
) -> None:
    small = proxied.with_overrides({"max_request_body_bytes": 1024})
    dispatcher = Recorder(_echo_caller)
    headers = {**_from(_fresh_ip()), "Authorization": f"Bearer {issue_token(4)}"}
    for client in _client(small, dispatcher):
        declared = client.post("/v1/posts", json={"content": "x" * 2000}, headers=headers)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            yield b'{"content": "'
            yield b"x" * 2000
            yield b'"}'

        streamed = client.post("/v1/posts", content=chunks(), headers=headers)
        fits = client.post("/v1/posts", json={"content": "x" * 100}, headers=headers)
    assert (declared.status_code, declared.json()["code"]) == (413, 8)
    assert streamed.status_code == 413
    assert fits.status_code == 200
    assert len(dispatcher.calls) == 1


def test_request_ids_are_kept_or_made(proxied: Settings) -> None:
    for client in _client(proxied, Recorder(_login_reply)):
        kept = client.post("/v1/auth/login", json=LOGIN, headers={"X-Request-Id": "abc-123"})
        assert kept.headers["X-Request-Id"] == "abc-123"
        made = client.post("/v1/auth/login", json=LOGIN, headers={"X-Request-Id": "bad id!"})
        assert made.headers["X-Request-Id"] != "bad id!"
        assert len(made.headers["X-Request-Id"]) == 32


def test_without_redis_the_gateway_fails_open_by_default(settings: Settings) -> None:
    broken = settings.with_overrides(
        {"redis_url": "redis://127.0.0.1:1/0", "store_timeout_seconds": 0.5}
    )
    dispatcher = Recorder(_login_reply)
    metrics = CountingMetrics()
    for client in _client(broken, dispatcher, metrics):
        replies = [client.post("/v1/auth/login", json=LOGIN) for _ in range(3)]
        assert [r.status_code for r in replies] == [200, 200, 200]
        assert replies[0].headers["RateLimit-Limit"] == str(broken.rate_limit_ip_capacity)
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["dependencies"]["redis"]["ok"] is False
    assert len(dispatcher.calls) == 3
    assert metrics.redis_failures == 4  # counted per request decided without Redis
    assert metrics.rejected == 0


def test_fail_closed_refuses_with_503_but_health_still_answers(settings: Settings) -> None:
    broken = settings.with_overrides(
        {
            "redis_url": "redis://127.0.0.1:1/0",
            "store_timeout_seconds": 0.5,
            "rate_limit_fail_open": False,
        }
    )
    dispatcher = Recorder(_login_reply)
    for client in _client(broken, dispatcher):
        response = client.post("/v1/auth/login", json=LOGIN)
        assert response.status_code == 503
        assert response.json()["code"] == 14
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["dependencies"]["redis"]["ok"] is False
        assert health.json()["dependencies"]["postgres"]["ok"] is True
        # Why Redis is down (its address, the exception's text) is logged, never served.
        assert "127.0.0.1" not in health.text
        assert "Error" not in health.text
    assert dispatcher.calls == []


def test_a_test_only_service_is_served_from_its_descriptors_alone(
    proxied: Settings, issue_token: Callable[[int], str], tmp_path: Path
) -> None:
    """The library service has no code in the gateway: compiling its .proto is all it takes."""

    def library(method: MethodSpec, request: Message, caller: Caller | None) -> Message:
        reply = method.output_type()
        if method.name == "GetBook":
            reply.name = request.name  # type: ignore[attr-defined]
            reply.pages = 412  # type: ignore[attr-defined]
            reply.shelf.id = str(caller.user_id if caller else "")  # type: ignore[attr-defined]
        if method.name == "SearchBooks":
            for tag in request.tags:  # type: ignore[attr-defined]
                reply.books.add(id=tag)  # type: ignore[attr-defined]
        return reply

    files = compile_descriptor_set(tmp_path)
    headers = {**_from(_fresh_ip()), "Authorization": f"Bearer {issue_token(99)}"}
    for client in _client(proxied, Recorder(library), files=files):
        book = client.get("/v1/shelves/s1/books/b2", headers=headers)
        assert book.status_code == 200, book.text
        assert book.json()["name"] == "shelves/s1/books/b2"
        assert book.json()["pages"] == "412"
        assert book.json()["shelf"]["id"] == "99"
        public = client.get("/v1/books:search?tags=a&tags=b", headers=_from(_fresh_ip()))
        assert public.status_code == 200, public.text
        assert [b["id"] for b in public.json()] == ["a", "b"]  # response_body: "books"
        assert client.get("/v1/shelves/s1/books/b2").status_code == 401
        assert client.request("ARCHIVE", "/v1/books/b1", headers=headers).status_code == 200
        document = client.get("/openapi.json").json()
        assert "/v1/{name}:preview" in document["paths"]
        assert "/v1/posts" not in document["paths"]


def test_a_route_without_a_body_rule_takes_any_body_or_none(
    proxied: Settings, issue_token: Callable[[int], str]
) -> None:
    """grpc-gateway's rule: no `body` in the http rule, no body read (clients send `{}`)."""
    dispatcher = Recorder(_echo_caller)
    headers = {**_from(_fresh_ip()), "Authorization": f"Bearer {issue_token(8)}"}
    for client in _client(proxied, dispatcher):
        sent = [
            client.post("/v1/users/5/follow", headers=headers),
            client.post("/v1/users/5/follow", content=b"", headers=headers),
            client.post("/v1/users/5/follow", json={}, headers=headers),
            client.post(
                "/v1/posts/9/likes",
                content=b"{}",
                headers={**headers, "Content-Type": "text/plain"},
            ),
            client.post("/v1/posts/9/likes", content=b"not json", headers=headers),
        ]
        unknown = client.post("/v1/posts", json={"content": "x", "colour": "red"}, headers=headers)
    assert [r.status_code for r in sent] == [200] * 5, [r.text for r in sent]
    assert [request.user_id for _, request, _ in dispatcher.calls[:3]] == [5, 5, 5]  # type: ignore[attr-defined]
    assert (unknown.status_code, unknown.json()["code"]) == (400, 3)
    assert "colour" in unknown.json()["message"]
    assert len(dispatcher.calls) == 5  # the unknown field never reached a service


def test_field_violations_are_bad_request_details_in_the_error_body(
    proxied: Settings, issue_token: Callable[[int], str]
) -> None:
    def refuse(method: MethodSpec, request: Message, caller: Caller | None) -> Message:
        raise InvalidFields(
            (FieldViolation("content", "must be at most 2000 characters", "string.max_len"),)
        )

    headers = {**_from(_fresh_ip()), "Authorization": f"Bearer {issue_token(9)}"}
    for client in _client(proxied, Recorder(refuse)):
        refused = client.post("/v1/posts", json={"content": "x"}, headers=headers)
    assert refused.status_code == 400
    assert refused.json() == {
        "code": 3,
        "message": "invalid request: content: must be at most 2000 characters",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {
                        "field": "content",
                        "description": "must be at most 2000 characters",
                        "reason": "string.max_len",
                    }
                ],
            }
        ],
    }


APP = "https://app.example.com"


def test_cors_preflight_is_answered_by_the_gateway_for_allowed_origins_only(
    proxied: Settings, issue_token: Callable[[int], str]
) -> None:
    browsers = proxied.with_overrides({"cors_allowed_origins": f"{APP}, http://localhost:3000"})
    dispatcher = Recorder(_echo_caller)
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    for client in _client(browsers, dispatcher):
        addr = _fresh_ip()
        allowed = client.options("/v1/posts", headers={**_from(addr), "Origin": APP, **preflight})
        other = client.options(
            "/v1/posts", headers={**_from(addr), "Origin": "https://evil.example", **preflight}
        )
        nowhere = client.options("/v1/nothing", headers={**_from(addr), "Origin": APP, **preflight})
    assert allowed.status_code == 204, allowed.text
    assert allowed.headers["Access-Control-Allow-Origin"] == APP
    assert allowed.headers["Access-Control-Allow-Methods"] == "POST"
    assert {"authorization", "content-type"} <= {
        h.strip() for h in allowed.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert int(allowed.headers["Access-Control-Max-Age"]) == browsers.cors_max_age_seconds
    assert "RateLimit-Remaining" in allowed.headers  # charged like any request
    assert other.status_code == 403
    assert "Access-Control-Allow-Origin" not in other.headers
    assert nowhere.status_code == 404
    assert dispatcher.calls == []  # preflights never reach a service


def test_actual_responses_carry_cors_headers_for_allowed_origins_only(
    proxied: Settings, issue_token: Callable[[int], str]
) -> None:
    browsers = proxied.with_overrides({"cors_allowed_origins": APP})
    token = {"Authorization": f"Bearer {issue_token(12)}"}
    for client in _client(browsers, Recorder(_echo_caller)):
        ok = client.get("/v1/users/5/stats", headers={**_from(_fresh_ip()), **token, "Origin": APP})
        denied = client.get("/v1/feed", headers={**_from(_fresh_ip()), "Origin": APP})
        foreign = client.get(
            "/v1/users/5/stats", headers={**_from(_fresh_ip()), **token, "Origin": "https://x.io"}
        )
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == APP
    assert "RateLimit-Remaining" in ok.headers["Access-Control-Expose-Headers"]
    assert "Origin" in ok.headers["Vary"]
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == APP  # the page can read the 401
    assert foreign.status_code == 200  # CORS is enforced by the browser, not by refusing
    assert "Access-Control-Allow-Origin" not in foreign.headers


def test_without_allowed_origins_there_is_no_cross_origin_access(proxied: Settings) -> None:
    assert proxied.cors_allowed_origins == ""  # the default
    for client in _client(proxied, Recorder(_login_reply)):
        preflight = client.options(
            "/v1/auth/login",
            headers={**_from(_fresh_ip()), "Origin": APP, "Access-Control-Request-Method": "POST"},
        )
        login = client.post(
            "/v1/auth/login", json=LOGIN, headers={**_from(_fresh_ip()), "Origin": APP}
        )
    assert preflight.status_code == 403
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert login.status_code == 200
    assert "Access-Control-Allow-Origin" not in login.headers
