"""The Serve applications of the product and the local (one-box) Serve config built from them.

The same shape is what KubeRay's `serveConfigV2` holds (cluster/base/serve-config.yaml); locally
every deployment gets a small fractional CPU so that the whole system fits on a 2-core machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve import Deployment

GRPC_SERVICER_FUNCTIONS = (
    "dmb.v1.users_pb2_grpc.add_UserServiceServicer_to_server",
    "dmb.v1.follows_pb2_grpc.add_FollowServiceServicer_to_server",
    "dmb.v1.posts_pb2_grpc.add_PostServiceServicer_to_server",
    "dmb.v1.feed_pb2_grpc.add_FeedServiceServicer_to_server",
    "dmb.v1.notifications_pb2_grpc.add_NotificationServiceServicer_to_server",
)
LOCAL_REPLICA_CPUS = 0.1
INGRESS_RESOURCE = "dmb_ingress"  # the head of a local cluster has it (entrypoints.ray_cluster)


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
    AppSpec("notifications", "serve_apps.notifications:build_app", "/internal/notifications"),
    AppSpec("pipeline", "actors.supervisor:build_app", None),  # the feed pipeline's actors
)


def deployment_of(
    cls: type, name: str, args: dict[str, Any], max_ongoing_requests: int
) -> Deployment:
    """`cls` as a Serve deployment, tuned by its application's `args` (the same keys for every
    application: num_cpus, num_replicas, max_ongoing_requests, resources). Without
    `num_replicas` the Serve config decides (a count or an autoscaling_config)."""
    options: dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": int(args.get("max_ongoing_requests", max_ongoing_requests)),
        "ray_actor_options": {
            "num_cpus": float(args.get("num_cpus", 1)),
            "resources": dict(args.get("resources", {})),
        },
    }
    if "num_replicas" in args:
        options["num_replicas"] = int(args["num_replicas"])
    return serve.deployment(**options)(cls)


def local_serve_config(
    http_host: str,
    http_port: int,
    grpc_port: int,
    apps: tuple[AppSpec, ...] = APPLICATIONS,
    deployments: dict[str, list[dict[str, Any]]] | None = None,
    nodes: int = 1,
) -> dict[str, Any]:
    """A ServeDeploySchema document for one machine (fractional CPUs).

    On one node every deployment has one replica. On several, the services get two replicas,
    which Serve spreads over the nodes, so losing one node leaves each service one; the
    gateway stays on the head, the local ingress node (`dmb_ingress`). `deployments` maps an app
    name to deployment overrides, as an operator would edit them in the Serve config (e.g. the
    PipelineSupervisor's `user_config`).
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
                "args": _local_args(app, nodes),
                **({"deployments": overrides[app.name]} if app.name in overrides else {}),
            }
            for app in apps
        ],
    }


def _local_args(app: AppSpec, nodes: int) -> dict[str, Any]:
    args: dict[str, Any] = {"num_cpus": LOCAL_REPLICA_CPUS}
    if app.name == "gateway":
        args["resources"] = {INGRESS_RESOURCE: 0.001}
    elif nodes > 1 and app.name in SERVICES:
        args["num_replicas"] = 2
    return args


SERVICES = ("users", "follows", "posts", "feed", "notifications")
