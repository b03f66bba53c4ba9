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
from ray.serve.metrics import Counter
from starlette.requests import Request
from starlette.responses import Response

from dmb.composition import process_components
from dmb.domain.identity import Caller
from dmb.errors import Unavailable
from dmb.stores.read_your_writes import WritePosition
from serve_apps.gateway.core import GatewayCore
from serve_apps.gateway.descriptors import DEFAULT_DESCRIPTOR_SET, MethodSpec, load_descriptor_set
from serve_apps.topology import deployment_of

log = logging.getLogger("dmb.gateway")
_UNAVAILABLE = (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
    RayActorError,  # ActorDiedError, ActorUnavailableError
)


class HandleDispatcher:
    """One DeploymentHandle per service, created once per replica: one hop per request."""

    def __init__(self) -> None:
        self._handles: dict[tuple[str, str], DeploymentHandle[Any]] = {}

    async def call(
        self,
        method: MethodSpec,
        request: Message,
        caller: Caller | None,
        write_position: WritePosition | None,
    ) -> Message:
        key = (method.app, method.deployment)
        handle = self._handles.get(key)
        if handle is None:
            handle = serve.get_deployment_handle(method.deployment, app_name=method.app)
            self._handles[key] = handle
        try:
            reply: Message = await getattr(handle, method.name).remote(
                request, caller=caller, write_position=write_position
            )
        except _UNAVAILABLE as exc:
            raise Unavailable(f"{method.app} is unavailable: {type(exc).__name__}") from exc
        return reply


class RayMetrics:
    def __init__(self) -> None:
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


def _serve_request_id() -> str | None:
    """Serve's id for this request (the one in Serve's own logs), so both logs agree."""
    try:
        request_id = serve.context._get_serve_request_context().request_id
    except Exception:  # private API: fall back to the header when it moves
        return None
    return str(request_id) if request_id else None


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
        return await self._core.handle(request, _serve_request_id())


def build_app(args: dict[str, Any]) -> serve.Application:
    """args: those of every application (serve_apps.topology.deployment_of), and descriptor_set
    (a path; default the one generated into dmb/v1)."""
    return deployment_of(GatewayDeployment, "Gateway", args, max_ongoing_requests=256).bind(
        args.get("descriptor_set")
    )
