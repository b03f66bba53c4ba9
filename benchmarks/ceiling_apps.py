"""Ray Serve's own ceiling on this machine: the cheapest possible apps behind the same ingress.

`bare`: one deployment answering HTTP itself. `hop`: an HTTP ingress deployment that makes one
DeploymentHandle call to a second deployment and returns its answer, which is the shape of every
request of ours (gateway -> service). Our figures are quoted as a ratio of these.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MAX_ONGOING = 256


class Bare:
    async def __call__(self, request: Request) -> Response:
        return JSONResponse({"ok": True})


class Echo:
    async def echo(self, value: int) -> int:
        return value


class HopIngress:
    def __init__(self, echo: Any) -> None:
        self._echo = echo

    async def __call__(self, request: Request) -> Response:
        return JSONResponse({"value": await self._echo.echo.remote(1)})


def build_bare(args: dict[str, Any]) -> Application:
    options = {"num_cpus": args.get("num_cpus", 0.1)}
    return serve.deployment(
        name="Bare", max_ongoing_requests=MAX_ONGOING, ray_actor_options=options
    )(Bare).bind()


def build_hop(args: dict[str, Any]) -> Application:
    options = {"num_cpus": args.get("num_cpus", 0.1)}
    echo = serve.deployment(
        name="Echo", max_ongoing_requests=MAX_ONGOING, ray_actor_options=options
    )(Echo).bind()
    return serve.deployment(
        name="HopIngress", max_ongoing_requests=MAX_ONGOING, ray_actor_options=options
    )(HopIngress).bind(echo)
