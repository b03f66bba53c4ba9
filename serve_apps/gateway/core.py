"""The gateway's request path, independent of how a method is reached.

route -> JWT (in-process) -> admission (one Redis round trip: every bucket, the cached
revocation state, the caller's write position) -> transcode -> one dispatch -> JSON. Requests
refused early (404, 405, 401) are still charged to their bucket and carry the RateLimit-*
headers like every other response. A `Dispatcher` delivers the request message to the
service: through a DeploymentHandle in the Serve gateway (serve_apps.gateway.app), or by a
direct call in the single-process monolith baseline (benchmarks), so both run exactly this code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dmb import tracing
from dmb.composition import Components
from dmb.domain.admission import Admission
from dmb.domain.client_address import client_address
from dmb.domain.identity import Caller, TokenVerifier, bearer_token
from dmb.errors import DomainError, Internal, Unauthenticated
from dmb.settings import Settings
from dmb.stores.health import StoreHealth
from dmb.stores.read_your_writes import WritePosition
from serve_apps.gateway import openapi
from serve_apps.gateway.cors import CorsPolicy, parse_origins
from serve_apps.gateway.descriptors import (
    MethodSpec,
    build_service_map,
    exposed,
    load_descriptor_set,
)
from serve_apps.gateway.errors import bearer_challenge, error_response
from serve_apps.gateway.routes import Match, RouteNotFound, RouteTable, VerbNotAllowed
from serve_apps.gateway.transcode import TranscodeError, request_message, response_document
from serve_apps.status_details import json_details, retry_after_header

log = logging.getLogger("dmb.gateway")
_OWN_ENDPOINTS = ("/healthz", "/openapi.json")


class Dispatcher(Protocol):
    async def call(
        self,
        method: MethodSpec,
        request: Message,
        caller: Caller | None,
        write_position: WritePosition | None,
    ) -> Message:
        """Deliver `request` (and what the gateway knows of the caller) to the service method;
        raise DomainError for a failure."""


class Metrics(Protocol):
    def rate_limited(self) -> None: ...
    def redis_failed(self) -> None: ...
    def request(self, route: str, method: str, status: int, seconds: float) -> None: ...


class _NoMetrics:
    def rate_limited(self) -> None:
        pass

    def redis_failed(self) -> None:
        pass

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        pass


UNMATCHED_ROUTE = "unmatched"


def route_label(routes: RouteTable, verb: str, path: str) -> str:
    """The `route` tag of a request's metrics: its route template (`/v1/posts/{id}`), never the
    raw path, so the number of series stays bounded whatever clients send."""
    if path in _OWN_ENDPOINTS:
        return path
    try:
        return routes.match(verb, path).route.template.source
    except (RouteNotFound, VerbNotAllowed):
        return UNMATCHED_ROUTE


class PayloadTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Refusal:
    """An answer decided before the buckets were charged, sent with their headers after."""

    code: grpc.StatusCode
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    http_status: int | None = None

    def response(self, limit_headers: dict[str, str]) -> Response:
        return error_response(
            self.code, self.message, {**limit_headers, **self.headers}, self.http_status
        )


def request_id_of(header: str | None) -> str:
    """The client's (or Serve's) X-Request-Id when it is a sane token, else a fresh one."""
    return tracing.valid_request_id(header) or tracing.new_request_id()


def raw_path(request: Request) -> str:
    """The path as sent (still percent-encoded), which template matching needs."""
    raw: bytes | None = request.scope.get("raw_path")
    if not raw:
        return quote(request.scope["path"])
    path = raw.decode("latin-1").partition("?")[0]
    root = request.scope.get("root_path", "")
    if root not in ("", "/") and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class GatewayCore:
    """One request: route, JWT, admission, transcode, one dispatch, JSON reply."""

    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        admission: Admission,
        verifier: TokenVerifier,
        health: StoreHealth,
        descriptor_set: descriptor_pb2.FileDescriptorSet | None = None,
        metrics: Metrics | None = None,
        echo_request_id: bool = True,
    ) -> None:
        self.settings = settings
        self._dispatcher = dispatcher
        self._admission = admission
        self._verifier = verifier  # signatures only: revocation is read during admission
        self._health = health
        files = descriptor_set if descriptor_set is not None else load_descriptor_set()
        self.methods = build_service_map(files)
        self.routes = RouteTable(exposed(self.methods.values()))
        self.openapi = json.dumps(openapi.build_document(self.routes.routes, files)).encode()
        self._metrics = metrics or _NoMetrics()
        self._echo_request_id = echo_request_id
        self.cors = CorsPolicy(
            parse_origins(settings.cors_allowed_origins), settings.cors_max_age_seconds
        )

    @classmethod
    def assemble(
        cls,
        components: Components,
        dispatcher: Dispatcher,
        descriptor_set: descriptor_pb2.FileDescriptorSet | None = None,
        metrics: Metrics | None = None,
        echo_request_id: bool = True,
    ) -> GatewayCore:
        """The gateway wired from the process's components (the Serve replica, the monolith
        and the tests all build it this way)."""
        return cls(
            components.settings,
            dispatcher,
            components.admission,
            components.verifier,
            components.health,
            descriptor_set=descriptor_set,
            metrics=metrics,
            echo_request_id=echo_request_id,
        )

    async def handle(self, request: Request, request_id: str | None = None) -> Response:
        """Answer one HTTP request; never raises. `request_id`: Serve's, when behind Serve.

        The whole request runs in the trace's root span and with its request id set, so every
        log line of it (here and in the service) carries the id."""
        request_id = request_id_of(request_id or request.headers.get("x-request-id"))
        started = time.perf_counter()
        route = route_label(self.routes, request.method, raw_path(request))
        with (
            tracing.request(request_id),
            tracing.span(
                f"{request.method} {route}",
                tracing.SERVER,
                {
                    "http.request.method": request.method,
                    "http.route": route,
                    "url.path": request.url.path,
                    "dmb.request_id": request_id,
                }
                if tracing.enabled()
                else None,
            ) as span,
        ):
            try:
                response = await self._handle(request, request_id)
            except Exception as exc:  # a bug in the gateway itself: still the contract's body
                log.exception("%s %s failed in the gateway", request.method, route)
                tracing.failed(span, type(exc).__name__, exc)
                response = error_response(
                    grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
                )
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                tracing.failed(span, f"HTTP {response.status_code}")
            if self._echo_request_id:
                response.headers["X-Request-Id"] = request_id
            for name, value in self.cors.response_headers(request.headers.get("origin")).items():
                response.headers.setdefault(name, value)
            seconds = time.perf_counter() - started
            log.log(
                logging.WARNING if response.status_code >= 500 else logging.DEBUG,
                "%s %s -> %d in %.1f ms",
                request.method,
                request.url.path,
                response.status_code,
                seconds * 1000,
            )
        self._metrics.request(route, request.method, response.status_code, seconds)
        return response

    async def _handle(self, request: Request, request_id: str) -> Response:
        verb, path = request.method, raw_path(request)
        match: Match | None = None
        refusal: Refusal | None = None
        own = path in _OWN_ENDPOINTS
        preflight = verb == "OPTIONS" and "access-control-request-method" in request.headers
        if preflight:
            refusal = self._preflight_refusal(request.headers.get("origin"), path)
        elif own:
            if verb != "GET":
                refusal = _not_allowed(verb, path, ["GET"])
        else:
            try:
                match = self.routes.match(verb, path)
            except RouteNotFound:
                refusal = Refusal(grpc.StatusCode.NOT_FOUND, f"no route for {verb} {path}")
            except VerbNotAllowed as exc:
                refusal = _not_allowed(verb, path, exc.allowed)
        caller: Caller | None = None
        if match is not None and not match.route.method.public:
            authorization = request.headers.get("authorization")
            try:
                caller = self._verifier.verify_signature(bearer_token(authorization))
            except Unauthenticated as exc:
                challenge = bearer_challenge(token_presented=bool(authorization))
                refusal = Refusal(exc.code, exc.message, challenge)
        # Charged even for requests about to be refused: 404 scans and bad tokens cost tokens.
        admitted = await self._admission.admit(self._client_ip(request), caller, exempt=own)
        if admitted.degraded:
            self._metrics.redis_failed()
        decision = admitted.decision
        if decision is None:
            return error_response(
                grpc.StatusCode.UNAVAILABLE, "rate limiter unavailable (failing closed)"
            )
        headers = decision.headers()
        if not decision.allowed:
            self._metrics.rate_limited()
            return error_response(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit exceeded; retry after {headers['Retry-After']} s",
                headers,
            )
        if refusal is not None:
            return refusal.response(headers)
        if preflight:
            return self._preflight(request.headers["origin"], path, headers)
        if admitted.revoked:
            return error_response(
                grpc.StatusCode.UNAUTHENTICATED,
                "access token has been revoked",
                {**headers, **bearer_challenge(token_presented=True)},
            )
        if caller is not None and admitted.revocation is False:
            caller = caller.checked()  # else the service asks Postgres before the method runs
        if own:
            response = await self.healthz() if path == "/healthz" else self._openapi()
            response.headers.update(headers)
            return response
        assert match is not None
        return await self._call(
            request, request_id, match, caller, admitted.write_position, headers
        )

    async def _call(
        self,
        request: Request,
        request_id: str,
        match: Match,
        caller: Caller | None,
        write_position: WritePosition | None,
        headers: dict[str, str],
    ) -> Response:
        method = match.route.method
        try:
            body = await self._read_body(request) if match.route.body else b""
            message = request_message(
                match.route, match.path_values, list(request.query_params.multi_items()), body
            )
        except PayloadTooLarge:
            return error_response(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request body exceeds {self.settings.max_request_body_bytes} bytes",
                headers,
                http_status=413,
            )
        except TranscodeError as exc:
            return error_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc), headers)
        try:
            reply = await asyncio.wait_for(
                self._dispatcher.call(method, message, caller, write_position),
                timeout=self.settings.request_timeout_seconds,
            )
        except DomainError as exc:
            if exc.code is grpc.StatusCode.INTERNAL:  # logged where it happened: no details
                exc = Internal(f"internal error (request id {request_id})")
            return error_response(
                exc.code,
                exc.message,
                {**headers, **retry_after_header(exc)},
                details=json_details(exc),
            )
        except TimeoutError:
            return error_response(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{method.full_name} timed out", headers
            )
        except Exception:
            log.exception("%s failed", method.full_name)
            return error_response(
                grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})", headers
            )
        return JSONResponse(response_document(match.route, reply), headers=headers)

    def _methods_of(self, path: str) -> list[str]:
        """The verbs some route takes on `path` (empty: no route)."""
        if path in _OWN_ENDPOINTS:
            return ["GET"]
        try:
            self.routes.match("OPTIONS", path)  # no route takes OPTIONS: this lists the verbs
        except VerbNotAllowed as exc:
            return exc.allowed
        except RouteNotFound:
            return []
        return []

    def _preflight_refusal(self, origin: str | None, path: str) -> Refusal | None:
        """Why a CORS preflight is refused (None: answer it); refusals carry no CORS headers,
        which is what makes the browser stop."""
        if self.cors.allowed_origin(origin) is None:
            return Refusal(grpc.StatusCode.PERMISSION_DENIED, "origin not allowed (CORS)")
        if not self._methods_of(path):
            return Refusal(grpc.StatusCode.NOT_FOUND, f"no route for {path}")
        return None

    def _preflight(self, origin: str, path: str, headers: dict[str, str]) -> Response:
        """204 with the verbs `path` takes; charged to the client's bucket like any request."""
        cors = self.cors.preflight_headers(origin, self._methods_of(path))
        return Response(status_code=204, headers={**headers, **cors})

    def _openapi(self) -> Response:
        return Response(self.openapi, media_type="application/json")

    def _client_ip(self, request: Request) -> str:
        return client_address(
            request.headers.get("x-forwarded-for"),
            request.client.host if request.client else None,
            self.settings.trusted_proxy_hops,
        )

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
        """Each dependency, probed in parallel with the store timeout: 200 only if all answer.

        The public body says only which dependency is down; why (an exception's text, which can
        name store hosts and users) goes to the log for operators.
        """
        probes = await self._health.check()
        healthy = all(probe.ok for probe in probes)
        for probe in probes:
            if not probe.ok:
                log.warning("healthz: %s is down: %s", probe.name, probe.detail)
        body = {
            "status": "ok" if healthy else "degraded",
            "dependencies": {p.name: {"ok": p.ok} for p in probes},
        }
        return JSONResponse(body, status_code=200 if healthy else 503)


def _not_allowed(verb: str, path: str, allowed: list[str]) -> Refusal:
    """405, as grpc-gateway answers it: UNIMPLEMENTED with the verbs that would work."""
    return Refusal(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{verb} is not allowed on {path} (allowed: {', '.join(allowed)})",
        {"Allow": ", ".join(allowed)},
        http_status=405,
    )
