"""The rendered manifests: schemas with unknown keys refused, and the properties the issue asks for.

Each validator is shown to fail on a misspelled field, so a green run means something.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra import infra_checks
from tests.infra.conftest import Rendered, find

OVERLAYS = ("cluster/overlays/dev", "cluster/overlays/prod")


@pytest.mark.parametrize("path", infra_checks.RENDERED)
def test_every_rendered_object_validates(rendered: Rendered, path: str) -> None:
    assert rendered[path], f"{path} renders nothing"
    problems = {
        f"{obj['kind']}/{obj['metadata']['name']}": infra_checks.validate_object(obj)
        for obj in rendered[path]
    }
    assert {name: found for name, found in problems.items() if found} == {}


# --- each validator rejects a misspelled field ------------------------------------------------


def test_rayservice_misspelled_field_is_rejected(rendered: Rendered) -> None:
    rayservice = copy.deepcopy(find(rendered[OVERLAYS[0]], "RayService"))
    spec = rayservice["spec"]["rayClusterConfig"]
    spec["enableInTreeAutoscalling"] = spec.pop("enableInTreeAutoscaling")
    problems = infra_checks.validate_object(rayservice)
    assert any("enableInTreeAutoscalling" in problem for problem in problems), problems


def test_rayservice_misspelled_field_in_pod_template_is_rejected(rendered: Rendered) -> None:
    rayservice = copy.deepcopy(find(rendered[OVERLAYS[1]], "RayService"))
    worker = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    worker["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 5}
    problems = infra_checks.validate_object(rayservice)
    assert any("readinesProbe" in problem for problem in problems), problems


def test_rayservice_defaults_are_applied_before_strict_validation() -> None:
    # upgradeStrategy.clusterUpgradeOptions.maxSurgePercent has a default: an object without it
    # must still validate (the API server fills it in), and the default must land in the object.
    schema = infra_checks.kuberay_schema("RayService")
    options = {"gatewayClassName": "istio", "intervalSeconds": 30, "stepSizePercent": 10}
    obj: dict[str, Any] = {"spec": {"upgradeStrategy": {"clusterUpgradeOptions": options}}}
    defaulted = infra_checks.apply_defaults(schema, obj)
    assert defaulted["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]["maxSurgePercent"] == 100


def test_built_in_kind_misspelled_field_is_rejected(rendered: Rendered) -> None:
    policy = copy.deepcopy(find(rendered[OVERLAYS[0]], "NetworkPolicy"))
    policy["spec"]["policyType"] = policy["spec"].pop("policyTypes")  # optional: only the typo
    problems = infra_checks.validate_object(policy)
    assert any("policyType" in problem for problem in problems), problems


def test_catalog_crd_misspelled_field_is_rejected(rendered: Rendered) -> None:
    secret = copy.deepcopy(find(rendered[OVERLAYS[0]], "ExternalSecret"))
    secret["spec"]["refreshIntervall"] = secret["spec"].pop("refreshInterval")
    problems = infra_checks.validate_object(secret)
    assert any("refreshIntervall" in problem for problem in problems), problems


def test_argocd_misspelled_field_is_rejected(rendered: Rendered) -> None:
    app = copy.deepcopy(find(rendered["cluster/argocd/dev"], "Application", "dmb-dev"))
    app["spec"]["syncPolicy"]["syncOption"] = app["spec"]["syncPolicy"].pop("syncOptions")
    assert infra_checks.validate_object(app)


def test_unknown_kind_is_a_problem() -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert infra_checks.validate_object(obj) == [
        "no schema known for example.com/v1 Widget: add one to tests/infra/infra_checks.py"
    ]


# --- what the RayService must be --------------------------------------------------------------


@pytest.mark.parametrize("path", OVERLAYS)
def test_rayservice_shape(rendered: Rendered, path: str) -> None:
    rayservice = find(rendered[path], "RayService", "dmb")
    spec = rayservice["spec"]
    for deprecated in ("serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"):
        assert deprecated not in spec
    # the old cluster keeps serving until the new one is healthy
    assert spec["upgradeStrategy"]["type"] == "NewCluster"
    ports = {port["name"]: port["port"] for port in spec["serveService"]["spec"]["ports"]}
    assert ports == {"serve": 8000, "serve-grpc": 9000}
    cluster = spec["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == "2.60.0"
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            resources = container["resources"]
            assert resources["requests"], container["name"]
            assert resources["limits"], container["name"]
            assert "readinessProbe" in container
            assert "livenessProbe" in container
            # the overlay's image (CI bumps the tag or digest), never the base placeholder
            repository, _, pin = container["image"].rpartition(":")
            assert repository.endswith(".amazonaws.com/dmb") or "@sha256" in repository
            assert pin
            assert pin != "latest"
    for worker in cluster["workerGroupSpecs"]:
        assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]


@pytest.mark.parametrize("path", OVERLAYS)
def test_serve_config_embeds_every_application(rendered: Rendered, path: str) -> None:
    config = yaml.safe_load(find(rendered[path], "RayService")["spec"]["serveConfigV2"])
    apps = {app["name"]: app for app in config["applications"]}
    assert {name: app["import_path"] for name, app in apps.items()} == {
        "gateway": "serve_apps.gateway:build_app",
        "users": "serve_apps.users:build_app",
        "follows": "serve_apps.follows:build_app",
        "posts": "serve_apps.posts:build_app",
        "feed": "serve_apps.feed:build_app",
        "notifications": "serve_apps.notifications:build_app",
        "pipeline": "actors.supervisor:build_app",
    }
    assert {name: app["route_prefix"] for name, app in apps.items()} == {
        "gateway": "/",
        "users": "/internal/users",
        "follows": "/internal/follows",
        "posts": "/internal/posts",
        "feed": "/internal/feed",
        "notifications": "/internal/notifications",
        "pipeline": None,
    }
    assert config["http_options"]["port"] == 8000
    assert config["grpc_options"]["port"] == 9000
    assert config["grpc_options"]["grpc_servicer_functions"] == [
        "dmb.v1.users_pb2_grpc.add_UserServiceServicer_to_server",
        "dmb.v1.follows_pb2_grpc.add_FollowServiceServicer_to_server",
        "dmb.v1.posts_pb2_grpc.add_PostServiceServicer_to_server",
        "dmb.v1.feed_pb2_grpc.add_FeedServiceServicer_to_server",
        "dmb.v1.notifications_pb2_grpc.add_NotificationServiceServicer_to_server",
    ]
    for app in apps.values():
        for deployment in app["deployments"]:
            assert "ray_actor_options" in deployment, deployment["name"]
            assert "autoscaling_config" in deployment or "num_replicas" in deployment
    supervisor = next(
        d for d in apps["pipeline"]["deployments"] if d["name"] == "PipelineSupervisor"
    )
    assert set(supervisor["user_config"]) == {"fanout_workers", "feed_consumers"}
    assert isinstance(supervisor["user_config"]["fanout_workers"], int)
    assert (
        supervisor["user_config"]["fanout_workers"] >= supervisor["user_config"]["feed_consumers"]
    )


def test_overlays_differ_only_in_sizes_replicas_image_and_endpoints(rendered: Rendered) -> None:
    allowed = (
        "metadata/namespace",
        "metadata/annotations/eks.amazonaws.com/role-arn",
        "spec/data/*/remoteRef/key",  # dmb/<env>/... in Secrets Manager
        "spec/tls/0/hosts/0",
        "spec/rules/0/host",
        "*/replicas",
        "*/minReplicas",
        "*/maxReplicas",
        "*/resources/*",
        "*/containers/0/image",
    )
    dev, prod = (
        {(o["kind"], o["metadata"]["name"]): o for o in rendered[path]} for path in OVERLAYS
    )
    assert dev.keys() == prod.keys()
    differences = [
        f"{kind}/{name}:{path}"
        for (kind, name) in dev
        for path in _diff(dev[(kind, name)], prod[(kind, name)])
    ]
    unexpected = [
        d for d in differences if not any(_matches(d.split(":", 1)[1], a) for a in allowed)
    ]
    assert unexpected == []
    assert any("image" in d for d in differences), "the overlays should pin different images"


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[str] = []
        for key in sorted(set(a) | set(b)):
            found += _diff(a.get(key), b.get(key), f"{path}/{key}" if path else str(key))
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}/{i}")
        ]
    return [] if a == b else [path]


def _matches(path: str, pattern: str) -> bool:
    parts, wanted = path.split("/"), pattern.split("/")
    if wanted[0] == "*":  # anywhere below: match the tail
        tail = wanted[1:]
        return any(_matches("/".join(parts[start:]), "/".join(tail)) for start in range(len(parts)))
    if wanted and wanted[-1] == "*" and len(parts) >= len(wanted):
        parts = [*parts[: len(wanted) - 1], "*"]
    if len(parts) != len(wanted):
        return False
    return all(w in ("*", p) for p, w in zip(parts, wanted, strict=True))


# --- secrets, identity, network, metrics, Argo CD --------------------------------------------


@pytest.mark.parametrize("path", OVERLAYS)
def test_secrets_and_irsa(rendered: Rendered, path: str) -> None:
    from dmb.settings import ENV_PREFIX, Settings

    environment = path.rsplit("/", 1)[1]
    secret = find(rendered[path], "ExternalSecret", "dmb-secrets")
    keys = {item["secretKey"] for item in secret["spec"]["data"]}
    assert {
        "DMB_DATABASE_URL",
        "DMB_DATABASE_REPLICA_URL",
        "DMB_REDIS_URL",
        "DMB_KAFKA_BOOTSTRAP",
        "DMB_JWT_PRIVATE_KEY",
        "DMB_JWT_PUBLIC_KEYS",
        "DMB_JWT_ACTIVE_KID",
    } <= keys
    for item in secret["spec"]["data"]:
        assert item["remoteRef"]["key"].startswith(f"dmb/{environment}/")
    settings = next(
        obj["data"]
        for obj in rendered[path]
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("dmb-settings-")
    )
    # every DMB_* variable the pods get is one the settings object knows (it refuses the others)
    for key in keys | set(settings):
        assert key.startswith(ENV_PREFIX)
        assert key[len(ENV_PREFIX) :].lower() in Settings.model_fields
    account = find(rendered[path], "ServiceAccount", "dmb")
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.endswith(f":role/dmb-{environment}-workload")
    rayservice = find(rendered[path], "RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert group["template"]["spec"]["serviceAccountName"] == "dmb"


@pytest.mark.parametrize("path", OVERLAYS)
def test_only_the_gateway_http_port_is_public(rendered: Rendered, path: str) -> None:
    policy = find(rendered[path], "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for rule in policy["spec"]["ingress"]:
        sources = rule["from"]
        ports = {port["port"] for port in rule.get("ports", [])}
        if any("namespaceSelector" in source for source in sources):
            assert ports, "a rule for other namespaces must name its ports"
            assert 9000 not in ports, "the gRPC ingress must stay inside the namespace"
        else:
            assert sources == [{"podSelector": {}}]
    public = [
        rule
        for rule in policy["spec"]["ingress"]
        if {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
        in rule["from"]
    ]
    assert [port["port"] for rule in public for port in rule["ports"]] == [8000]
    ingress = find(rendered[path], "Ingress")
    routes = ingress["spec"]["rules"][0]["http"]["paths"]
    assert {route["path"] for route in routes} == {"/v1/", "/healthz", "/openapi.json"}
    for route in routes:
        assert route["backend"]["service"] == {"name": "dmb-serve", "port": {"name": "serve"}}


@pytest.mark.parametrize("path", OVERLAYS)
def test_metrics_are_scraped_and_charted(rendered: Rendered, path: str) -> None:
    monitor = find(rendered[path], "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    rayservice = find(rendered[path], "RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        ports = group["template"]["spec"]["containers"][0]["ports"]
        assert {"containerPort": 8080, "name": "metrics"} in ports
    dashboard = next(
        obj for obj in rendered[path] if obj["kind"] == "ConfigMap" and "dmb.json" in obj["data"]
    )
    exprs = " ".join(
        target["expr"]
        for panel in json.loads(dashboard["data"]["dmb.json"])["panels"]
        for target in panel.get("targets", [])
    )
    for metric in (
        "ray_dmb_fanout_queue_depth",
        "ray_dmb_fanout_batches_total",
        "ray_dmb_cdc_lag_seconds",
        "ray_dmb_rate_limit_rejections_total",
        "ray_dmb_rate_limit_redis_failures_total",
    ):
        assert metric in exprs


def test_argocd_applications_per_environment(rendered: Rendered) -> None:
    for environment in ("dev", "prod"):
        apps = rendered[f"cluster/argocd/{environment}"]
        crds = find(apps, "Application", "kuberay-crds")
        assert "ServerSideApply=true" in crds["spec"]["syncPolicy"]["syncOptions"]
        assert crds["spec"]["source"]["targetRevision"] == "v1.7.0"
        app = find(apps, "Application", f"dmb-{environment}")
        assert app["spec"]["source"]["path"] == f"cluster/overlays/{environment}"
        assert app["spec"]["destination"]["namespace"] == f"dmb-{environment}"
    dev_app = find(rendered["cluster/argocd/dev"], "Application", "dmb-dev")
    prod_app = find(rendered["cluster/argocd/prod"], "Application", "dmb-prod")
    assert dev_app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "automated" not in prod_app["spec"]["syncPolicy"], "prod syncs by hand"


def test_image_matches_the_project_pins() -> None:
    import tomllib

    root = infra_checks.ROOT
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    ray_pin = next(d for d in project["dependencies"] if d.startswith("ray["))
    ray_version = ray_pin.split("==", 1)[1]
    dockerfile = (root / "cluster/Dockerfile").read_text()
    base = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM "))
    assert base == f"rayproject/ray:{ray_version}-py311"
    assert project["requires-python"] == ">=3.11"
    assert "\nUSER 1000:100\n" in dockerfile
    rayservice = yaml.safe_load((root / "cluster/base/rayservice.yaml").read_text())
    assert rayservice["spec"]["rayClusterConfig"]["rayVersion"] == ray_version


def test_dashboard_is_valid_json() -> None:
    path = Path(infra_checks.ROOT / "cluster/base/dashboards/dmb.json")
    assert json.loads(path.read_text())["uid"] == "dmb-overview"
