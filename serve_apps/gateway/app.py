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
from dmb.coalescing import Coalescer
from dmb.composition import process_components
from dmb.domain.identity import Caller
from dmb.errors import Unavailable
from dmb.stores.read_your_writes import WritePosition
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
    """One DeploymentHandle per service, created once per replica. With `max_in_flight` >= 1
    calls go through a coalescer, so under load many requests share one handle call (rpc.py's
    `Batch`), grouped per method: a batch of fast reads never waits behind a slow login. With
    0 every request is its own call of its method (the A/B baseline of docs/PERFORMANCE.md)."""

    def __init__(self, max_in_flight: int = 4, max_batch: int = 64) -> None:
        self._handles: dict[tuple[str, str], DeploymentHandle[Any]] = {}
        self.coalescer: Coalescer[tuple[str, str, str], Call, Message] | None = None
        self.configure(max_in_flight, max_batch)

    def configure(self, max_in_flight: int, max_batch: int) -> None:
        """Switch coalescing (0: off) or resize it; calls already out finish as they were."""
        self.coalescer = (
            Coalescer(self._send, max_in_flight, max_batch) if max_in_flight > 0 else None
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
            if self.coalescer is None:
                return await self._send_one(method, call)
            return await self.coalescer.submit((method.app, method.deployment, method.name), call)

    def _handle(self, app: str, deployment: str) -> DeploymentHandle[Any]:
        handle = self._handles.get((app, deployment))
        if handle is None:
            handle = serve.get_deployment_handle(deployment, app_name=app)
            self._handles[(app, deployment)] = handle
        return handle

    async def _send_one(self, method: MethodSpec, call: Call) -> Message:
        name, request, caller, write_position, origin = call
        rpc = getattr(self._handle(method.app, method.deployment), name)
        try:
            reply: Message = await rpc.remote(
                request, caller=caller, write_position=write_position, origin=origin
            )
        except _UNAVAILABLE as exc:
            raise Unavailable(f"{method.app} is unavailable: {type(exc).__name__}") from exc
        return reply

    async def _send(
        self, target: tuple[str, str, str], calls: list[Call]
    ) -> list[Message | BaseException]:
        app, deployment, _ = target
        try:
            replies: list[Message | BaseException] = await self._handle(
                app, deployment
            ).Batch.remote(calls)
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
        components = process_components()
        self._dispatcher = HandleDispatcher(
            components.settings.gateway_coalesce_in_flight,
            components.settings.gateway_coalesce_max_batch,
        )
        self._core = GatewayCore.assemble(
            components,
            self._dispatcher,
            descriptor_set=files,
            metrics=RayMetrics(),
            echo_request_id=False,  # Serve adds X-Request-ID itself (both ingress modes)
        )
        self._settings = components.settings
        log.info("gateway ready: %d routes", len(self._core.routes.routes))

    def reconfigure(self, config: dict[str, Any]) -> None:
        """The Serve config's `user_config` (an operator's live edit, no replica restart):
        `coalesce_in_flight` and `coalesce_max_batch`, each defaulting to its DMB_GATEWAY_*
        setting."""
        in_flight = int(config.get("coalesce_in_flight", self._settings.gateway_coalesce_in_flight))
        max_batch = int(config.get("coalesce_max_batch", self._settings.gateway_coalesce_max_batch))
        if in_flight < 0 or max_batch < 1:
            raise ValueError("coalesce_in_flight must be >= 0 and coalesce_max_batch >= 1")
        self._dispatcher.configure(in_flight, max_batch)
        log.info("gateway coalescing: in flight %d, batch %d (0: off)", in_flight, max_batch)

    async def __call__(self, request: Request) -> Response:
        # Serve's id (the client's X-Request-Id, or HAProxy's), so Serve's logs and ours agree.
        return await self._core.handle(request, serve_request_id())


def build_app(args: dict[str, Any]) -> serve.Application:
    """args: those of every application (serve_apps.topology.deployment_of), and descriptor_set
    (a path; default the one generated into dmb/v1)."""
    return deployment_of(GatewayDeployment, "Gateway", args, max_ongoing_requests=256).bind(
        args.get("descriptor_set")
    )
