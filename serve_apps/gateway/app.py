"""The Gateway Serve deployment: GatewayCore with DeploymentHandle dispatch and Ray metrics."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter
from starlette.requests import Request
from starlette.responses import Response

from dmb.domain.errors import Unavailable
from dmb.domain.identity import Caller
from dmb.settings import load_settings
from serve_apps.gateway.core import GatewayCore
from serve_apps.gateway.descriptors import MethodSpec


class HandleDispatcher:
    """One DeploymentHandle per service, created on first use and reused: one hop per request."""

    def __init__(self) -> None:
        self._handles: dict[tuple[str, str], DeploymentHandle[Any]] = {}

    async def call(self, method: MethodSpec, request: Message, caller: Caller | None) -> Message:
        key = (method.app, method.deployment)
        handle = self._handles.get(key)
        if handle is None:
            handle = serve.get_deployment_handle(method.deployment, app_name=method.app)
            self._handles[key] = handle
        try:
            reply: Message = await getattr(handle, method.name).remote(request, caller=caller)
        except (BackPressureError, DeploymentUnavailableError, RayActorError) as exc:
            raise Unavailable(f"{method.app} is unavailable: {type(exc).__name__}") from exc
        return reply


class RayMetrics:
    def __init__(self) -> None:
        self._rejected = Counter(
            "dmb_rate_limit_rejections_total", description="Requests refused with 429"
        )
        self._redis = Counter(
            "dmb_rate_limit_redis_failures_total",
            description="Rate-limit checks that could not reach Redis",
        )

    def rate_limited(self) -> None:
        self._rejected.inc()

    def redis_failed(self) -> None:
        self._redis.inc()


class GatewayDeployment:
    def __init__(self) -> None:
        self._core = GatewayCore(load_settings(), HandleDispatcher(), metrics=RayMetrics())

    async def __call__(self, request: Request) -> Response:
        return await self._core.handle(request)


def build_app(args: dict[str, Any]) -> serve.Application:
    return serve.deployment(
        name="Gateway",
        max_ongoing_requests=int(args.get("max_ongoing_requests", 256)),
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 1))},
    )(GatewayDeployment).bind()
