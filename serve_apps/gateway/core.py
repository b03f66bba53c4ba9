"""The gateway's request path, independent of how a method is reached.

route -> JWT -> token buckets (+ denylist, one Redis round trip) -> transcode -> dispatch ->
JSON. A `Dispatcher` delivers the request message to the service: through a DeploymentHandle in
the Serve gateway (serve_apps.gateway.app), or by a direct call in the single-process monolith
baseline (benchmarks), so both run exactly this code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
import uuid
from typing import Any, Protocol

import grpc
import psycopg
from google.protobuf.message import Message
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dmb.domain.errors import DomainError, Unauthenticated
from dmb.domain.identity import Caller, TokenVerifier, bearer_token, denylist_key
from dmb.settings import Settings
from dmb.stores.redis import create_redis
from serve_apps.gateway import openapi
from serve_apps.gateway.descriptors import (
    MethodSpec,
    build_service_map,
    exposed,
    load_descriptor_set,
)
from serve_apps.gateway.errors import error_response
from serve_apps.gateway.ratelimit import (
    BucketSpec,
    Decision,
    RateLimiter,
    ip_bucket,
    unlimited,
    user_bucket,
)
from serve_apps.gateway.routes import RouteNotFound, RouteTable, VerbNotAllowed
from serve_apps.gateway.transcode import TranscodeError, request_message, response_document

log = logging.getLogger("dmb.gateway")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Dispatcher(Protocol):
    async def call(self, method: MethodSpec, request: Message, caller: Caller | None) -> Message:
        """Deliver `request` to the service method; raise DomainError for a failure."""


class Metrics(Protocol):
    def rate_limited(self) -> None: ...
    def redis_failed(self) -> None: ...


class _NoMetrics:
    def rate_limited(self) -> None:
        pass

    def redis_failed(self) -> None:
        pass


class PayloadTooLarge(Exception):
    pass


class GatewayCore:
    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        descriptor_set: Any = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self._dispatcher = dispatcher
        files = descriptor_set if descriptor_set is not None else load_descriptor_set()
        self.methods = build_service_map(files)
        self.routes = RouteTable(exposed(self.methods.values()))
        self.openapi = json.dumps(openapi.build_document(self.routes.routes)).encode()
        self._redis = create_redis(settings)
        self._limiter = RateLimiter(self._redis, settings.rate_limit_fail_open)
        self._verifier = TokenVerifier(settings)  # signature only; denylist read with the buckets
        self._metrics = metrics or _NoMetrics()

    async def close(self) -> None:
        await self._redis.aclose()

    async def handle(self, request: Request) -> Response:
        request_id = request.headers.get("x-request-id", "")
        if not _REQUEST_ID.match(request_id):
            request_id = uuid.uuid4().hex
        started = time.perf_counter()
        response = await self._handle(request, request_id)
        response.headers["X-Request-Id"] = request_id
        log.debug(
            "request_id=%s %s %s -> %d in %.1f ms",
            request_id,
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    async def _handle(self, request: Request, request_id: str) -> Response:
        path = request.url.path
        if path == "/healthz" and request.method == "GET":
            return await self.healthz()
        if path == "/openapi.json" and request.method == "GET":
            return Response(self.openapi, media_type="application/json")
        try:
            match = self.routes.match(request.method, path)
        except RouteNotFound:
            return error_response(grpc.StatusCode.NOT_FOUND, f"no route for {path}")
        except VerbNotAllowed as exc:
            return error_response(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{request.method} is not allowed on {path}",
                headers={"Allow": ", ".join(exc.allowed)},
                http_status=405,
            )
        method = match.route.method
        caller: Caller | None = None
        try:
            if not method.public:
                caller = self._verifier.verify_signature(
                    bearer_token(request.headers.get("authorization"))
                )
        except Unauthenticated as exc:
            return error_response(exc.code, exc.message)
        decision, revoked = await self._admit(request, caller)
        if decision is None:
            return error_response(
                grpc.StatusCode.UNAVAILABLE, "rate limiter unavailable (failing closed)"
            )
        headers = decision.headers()
        if revoked:
            return error_response(
                grpc.StatusCode.UNAUTHENTICATED, "access token has been revoked", headers
            )
        if not decision.allowed:
            self._metrics.rate_limited()
            return error_response(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded", headers
            )
        try:
            body = await self._read_body(request)
            message = request_message(
                match.route, match.path_values, list(request.query_params.multi_items()), body
            )
        except PayloadTooLarge:
            return error_response(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request body exceeds {self.settings.max_request_body_bytes} bytes",
                headers,
                http_status=413,
            )
        except TranscodeError as exc:
            return error_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc), headers)
        try:
            reply = await asyncio.wait_for(
                self._dispatcher.call(method, message, caller),
                timeout=self.settings.request_timeout_seconds,
            )
        except DomainError as exc:
            return error_response(exc.code, exc.message, headers)
        except TimeoutError:
            return error_response(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{method.full_name} timed out", headers
            )
        except Exception:
            log.exception("request_id=%s %s failed", request_id, method.full_name)
            return error_response(
                grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})", headers
            )
        return JSONResponse(response_document(match.route, reply), headers=headers)

    async def _admit(self, request: Request, caller: Caller | None) -> tuple[Decision | None, bool]:
        """Charge the buckets and read the denylist in one round trip. None: fail closed."""
        buckets: list[BucketSpec] = [ip_bucket(self.settings, self._client_ip(request))]
        if caller is not None:
            buckets.append(user_bucket(self.settings, caller.user_id))
        deny_key = denylist_key(caller.jti) if caller is not None else None
        try:
            return await self._limiter.check(buckets, also_exists=deny_key)
        except (RedisError, OSError) as exc:
            self._metrics.redis_failed()
            if not self._limiter.fail_open:
                log.error("rate limiter: Redis unavailable, refusing (fail-closed): %s", exc)
                return None, False
            log.warning("rate limiter: Redis unavailable, admitting (fail-open): %s", exc)
            return unlimited(buckets), False

    def _client_ip(self, request: Request) -> str:
        hops = self.settings.trusted_proxy_hops
        if hops:
            forwarded = [p.strip() for p in request.headers.get("x-forwarded-for", "").split(",")]
            forwarded = [p for p in forwarded if p]
            if len(forwarded) >= hops:
                return forwarded[-hops]
        return request.client.host if request.client else "unknown"

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_request_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def healthz(self) -> Response:
        checks = await asyncio.gather(
            self._check("redis", self._ping_redis()),
            self._check("postgres", self._ping_postgres()),
            self._check("kafka", self._ping_kafka()),
        )
        healthy = all(ok for _, ok, _ in checks)
        body = {
            "status": "ok" if healthy else "degraded",
            "dependencies": {name: {"ok": ok, "detail": detail} for name, ok, detail in checks},
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def _check(self, name: str, probe: Any) -> tuple[str, bool, str]:
        try:
            await asyncio.wait_for(probe, timeout=self.settings.store_timeout_seconds)
        except Exception as exc:  # any failure is reported, not raised
            return name, False, f"{type(exc).__name__}: {exc}"[:200]
        return name, True, "ok"

    async def _ping_redis(self) -> None:
        await self._redis.ping()

    async def _ping_postgres(self) -> None:
        url = self.settings.database_url
        if url is None:
            raise RuntimeError("DMB_DATABASE_URL is not set")
        async with await psycopg.AsyncConnection.connect(
            url.get_secret_value(), connect_timeout=int(self.settings.store_timeout_seconds)
        ) as conn:
            await conn.execute("SELECT 1")

    async def _ping_kafka(self) -> None:
        bootstrap = self.settings.kafka_bootstrap
        if not bootstrap:
            raise RuntimeError("DMB_KAFKA_BOOTSTRAP is not set")
        host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: socket.create_connection((host, int(port)), timeout=2).close()
        )
