"""The monolith baseline: the same gateway core and domain code in one plain ASGI process.

No Ray: GatewayCore dispatches straight to the service classes (the very classes the Serve
deployments wrap), all wired from one `Components`, and the counter flusher runs as a task in
the same event loop. This is what a user would pick for a single small box; benchmarks/e2e.py
measures it against the Ray system on the same stores. The Ray system has one Postgres pool per
service replica; the monolith's single pool gets the services' connections together.

    python benchmarks/monolith.py --port 8100   (settings from the DMB_* environment)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402
from google.protobuf.message import Message  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from dmb.composition import Components, tame_garbage_collection  # noqa: E402
from dmb.domain.identity import Caller  # noqa: E402
from dmb.settings import load_settings  # noqa: E402
from dmb.stores.read_your_writes import WritePosition  # noqa: E402
from serve_apps.feed import FeedServiceDeployment  # noqa: E402
from serve_apps.follows import FollowServiceDeployment  # noqa: E402
from serve_apps.gateway.core import GatewayCore  # noqa: E402
from serve_apps.gateway.descriptors import MethodSpec  # noqa: E402
from serve_apps.notifications import NotificationServiceDeployment  # noqa: E402
from serve_apps.posts import PostServiceDeployment  # noqa: E402
from serve_apps.topology import SERVICES  # noqa: E402
from serve_apps.users import UserServiceDeployment  # noqa: E402

# Every Serve service application's class, by app name: the monolith must answer every route the
# gateway has (a missing one was a 500 on GET /v1/notifications in the baseline's mix).
SERVICE_CLASSES: dict[str, Any] = {
    "users": UserServiceDeployment,
    "follows": FollowServiceDeployment,
    "posts": PostServiceDeployment,
    "feed": FeedServiceDeployment,
    "notifications": NotificationServiceDeployment,
}


class LocalDispatcher:
    """Calls the service object in this process: the handle hop, minus Ray."""

    def __init__(self, services: dict[str, Any]) -> None:
        self._services = services

    async def call(
        self,
        method: MethodSpec,
        request: Message,
        caller: Caller | None,
        write_position: WritePosition | None,
    ) -> Message:
        reply: Message = await getattr(self._services[method.app], method.name)(
            request, caller=caller, write_position=write_position
        )
        return reply


def build_app() -> Starlette:
    settings = load_settings()
    pool_max = settings.database_pool_max * len(SERVICES)  # what the service replicas would hold
    components = Components(settings.with_overrides({"database_pool_max": pool_max}))
    if set(SERVICE_CLASSES) != set(SERVICES):
        raise RuntimeError(f"the monolith serves {sorted(SERVICE_CLASSES)}, not {sorted(SERVICES)}")
    services = {name: cls(components) for name, cls in SERVICE_CLASSES.items()}
    core = GatewayCore.assemble(components, LocalDispatcher(services))
    tame_garbage_collection(settings)  # as every Ray worker does: the same rules for both

    async def endpoint(request: Request) -> Response:
        return await core.handle(request)

    async def flush_forever() -> None:
        while True:
            await asyncio.sleep(settings.counter_flush_seconds)
            with contextlib.suppress(Exception):
                await components.counters.flush()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await components.ready()
        task = asyncio.create_task(flush_forever())
        yield
        task.cancel()
        await components.close()

    verbs = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=verbs)], lifespan=lifespan)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning", loop="uvloop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
