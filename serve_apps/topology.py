"""The Serve applications of the product and the local (one-box) Serve config built from them.

The same shape is what KubeRay's `serveConfigV2` holds (cluster/base/serve-config.yaml); locally
every deployment gets a small fractional CPU so that the whole system fits on a 2-core machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GRPC_SERVICER_FUNCTIONS = (
    "dmb.v1.users_pb2_grpc.add_UserServiceServicer_to_server",
    "dmb.v1.follows_pb2_grpc.add_FollowServiceServicer_to_server",
    "dmb.v1.posts_pb2_grpc.add_PostServiceServicer_to_server",
    "dmb.v1.feed_pb2_grpc.add_FeedServiceServicer_to_server",
)
LOCAL_REPLICA_CPUS = 0.1


@dataclass(frozen=True)
class AppSpec:
    """One Serve application: independently deployed, scaled and upgraded."""

    name: str
    import_path: str
    route_prefix: str | None  # None: no HTTP route (reached by handles and gRPC only)


APPLICATIONS = (
    AppSpec("gateway", "serve_apps.gateway:build_app", "/"),
    AppSpec("users", "serve_apps.users:build_app", "/internal/users"),
    AppSpec("follows", "serve_apps.follows:build_app", "/internal/follows"),
    AppSpec("posts", "serve_apps.posts:build_app", "/internal/posts"),
    AppSpec("feed", "serve_apps.feed:build_app", "/internal/feed"),
    AppSpec("pipeline", "actors.supervisor:build_app", None),  # the feed pipeline's actors
)


def local_serve_config(
    http_host: str,
    http_port: int,
    grpc_port: int,
    apps: tuple[AppSpec, ...] = APPLICATIONS,
    deployments: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """A ServeDeploySchema document for one machine (fractional CPUs, one replica each).

    `deployments` maps an app name to deployment overrides, as an operator would edit them in
    the Serve config (e.g. the PipelineSupervisor's `user_config`).
    """
    overrides = deployments or {}
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": http_host, "port": http_port},
        "grpc_options": {
            "port": grpc_port,
            "grpc_servicer_functions": list(GRPC_SERVICER_FUNCTIONS),
        },
        "applications": [
            {
                "name": app.name,
                "import_path": app.import_path,
                "route_prefix": app.route_prefix,
                "args": {"num_cpus": LOCAL_REPLICA_CPUS},
                **({"deployments": overrides[app.name]} if app.name in overrides else {}),
            }
            for app in apps
        ],
    }
