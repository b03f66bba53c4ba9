"""The Gateway Serve deployment: GatewayCore with DeploymentHandle dispatch and Ray metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from dmb import tracing
from dmb.composition import process_components
from dmb.domain.identity import Caller
from dmb.errors import Unavailable
from dmb.stores.read_your_writes import WritePosition
from serve_apps.gateway.coalescing import Coalescer
from serve_apps.gateway.core import GatewayCore
from serve_apps.gateway.descriptors import DEFAULT_DESCRIPTOR_SET, MethodSpec, load_descriptor_set
from serve_apps.rpc import Call, serve_request_id
from serve_apps.topology import deployment_of

log = logging.getLogger("dmb.gateway")
_UNAVAILABLE = (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
    RayActorError,  # ActorDiedError, ActorUnavailableError
)


class HandleDispatcher:
    """One DeploymentHandle per service, created once per replica; calls go through a
    coalescer, so under load many requests share one handle call (rpc.py's `Batch`). Calls are
    grouped per method: a batch of fast reads never waits behind a slow login."""

    def __init__(self, max_in_flight: int = 2, max_batch: int = 64) -> None:
        self._handles: dict[tuple[str, str], DeploymentHandle[Any]] = {}
        self.coalescer: Coalescer[tuple[str, str, str], Call, Message] = Coalescer(
            self._send, max_in_flight, max_batch
        )

    async def call(
        self,
        method: MethodSpec,
        request: Message,
        caller: Caller | None,
        write_position: WritePosition | None,
    ) -> Message:
        """The handle hop as a client span; the call carries its own origin (request id, this
        span) because the coalescer may send it in one handle call with other requests'."""
        with tracing.span(
            f"{method.service}/{method.name}",
            tracing.CLIENT,
            {"rpc.system": "grpc", "rpc.service": method.service, "rpc.method": method.name},
        ):
            call: Call = (method.name, request, caller, write_position, tracing.outgoing())
            return await self.coalescer.submit((method.app, method.deployment, method.name), call)

    async def _send(
        self, target: tuple[str, str, str], calls: list[Call]
    ) -> list[Message | BaseException]:
        app, deployment, _ = target
        handle = self._handles.get((app, deployment))
        if handle is None:
            handle = serve.get_deployment_handle(deployment, app_name=app)
            self._handles[(app, deployment)] = handle
        try:
            replies: list[Message | BaseException] = await handle.Batch.remote(calls)
        except _UNAVAILABLE as exc:
            raise Unavailable(f"{app} is unavailable: {type(exc).__name__}") from exc
        return replies


# Request latency buckets, seconds: a cached read is a few ms, the request timeout is seconds.
LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


class RayMetrics:
    """The gateway's series (Ray exports them as `ray_<name>`; docs/OPERATIONS.md lists them)."""

    def __init__(self) -> None:
        self._requests = Counter(
            "dmb_http_requests_total",
            description="HTTP requests answered, by route template, method and status",
            tag_keys=("route", "method", "status"),  # type: ignore[arg-type]  # Ray says tuple[str]
        )
        self._latency = Histogram(
            "dmb_http_request_seconds",
            description="Time to answer an HTTP request in the gateway",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=("route",),
        )
        self._rejected = Counter(
            "dmb_rate_limit_rejections_total", description="Requests refused with 429"
        )
        self._redis = Counter(
            "dmb_rate_limit_redis_failures_total",
            description="Requests whose rate-limit check could not reach Redis",
        )

    def rate_limited(self) -> None:
        self._rejected.inc()

    def redis_failed(self) -> None:
        self._redis.inc()

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests.inc(tags={"route": route, "method": method, "status": str(status)})
        self._latency.observe(seconds, tags={"route": route})


class GatewayDeployment:
    def __init__(self, descriptor_set: str | None = None) -> None:
        files = load_descriptor_set(
            Path(descriptor_set) if descriptor_set else DEFAULT_DESCRIPTOR_SET
        )
        self._core = GatewayCore.assemble(
            process_components(),
            HandleDispatcher(),
            descriptor_set=files,
            metrics=RayMetrics(),
            echo_request_id=False,  # Serve adds X-Request-ID itself (both ingress modes)
        )
        log.info("gateway ready: %d routes", len(self._core.routes.routes))

    async def __call__(self, request: Request) -> Response:
        # Serve's id (the client's X-Request-Id, or HAProxy's), so Serve's logs and ours agree.
        return await self._core.handle(request, serve_request_id())


def build_app(args: dict[str, Any]) -> serve.Application:
    """args: those of every application (serve_apps.topology.deployment_of), and descriptor_set
    (a path; default the one generated into dmb/v1)."""
    return deployment_of(GatewayDeployment, "Gateway", args, max_ongoing_requests=256).bind(
        args.get("descriptor_set")
    )
