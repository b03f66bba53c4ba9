"""Offline checks of the Kubernetes manifests: they pass as written, and a typo fails them."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import infra_checks


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    objects = {}
    for path in infra_checks.RENDERED:
        for obj in infra_checks.render(path):
            objects[f"{path}:{obj['kind']}/{obj['metadata']['name']}"] = obj
    return objects


def _one(rendered: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    return copy.deepcopy(rendered[key])


def test_every_rendered_object_validates(rendered: dict[str, dict[str, Any]]) -> None:
    problems = {key: infra_checks.validate_object(obj) for key, obj in rendered.items()}
    assert {key: p for key, p in problems.items() if p} == {}
    kinds = {obj["kind"] for obj in rendered.values()}
    assert {"RayService", "ExternalSecret", "PodMonitor", "Application", "NetworkPolicy"} <= kinds


def test_a_misspelled_rayservice_field_fails(rendered: dict[str, dict[str, Any]]) -> None:
    service = _one(rendered, "cluster/overlays/prod:RayService/dmb")
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["rayStartParms"] = head.pop("rayStartParams")
    assert any("rayStartParms" in p for p in infra_checks.validate_object(service))


def test_a_misspelled_pod_template_field_fails(rendered: dict[str, dict[str, Any]]) -> None:
    service = _one(rendered, "cluster/overlays/dev:RayService/dmb")
    container = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"][
        "containers"
    ][0]
    container["imagePullPolicyy"] = "Always"
    assert infra_checks.validate_object(service)


def test_a_misspelled_builtin_field_fails(rendered: dict[str, dict[str, Any]]) -> None:
    policy = _one(rendered, "cluster/overlays/prod:NetworkPolicy/dmb-ingress")
    policy["spec"]["podSelectr"] = policy["spec"].pop("podSelector")
    assert infra_checks.validate_object(policy)


def test_a_misspelled_catalog_crd_field_fails(rendered: dict[str, dict[str, Any]]) -> None:
    secret = _one(rendered, "cluster/overlays/prod:ExternalSecret/dmb-secrets")
    secret["spec"]["refreshIntervall"] = "1h"
    assert infra_checks.validate_object(secret)
    application = _one(rendered, "cluster/argocd:Application/dmb-prod")
    application["spec"]["sauce"] = application["spec"].pop("source")
    assert infra_checks.validate_object(application)


def test_serve_config_validates_and_imports(rendered: dict[str, dict[str, Any]]) -> None:
    text = rendered["cluster/overlays/prod:RayService/dmb"]["spec"]["serveConfigV2"]
    assert infra_checks.validate_serve_config(text) == []
    config = yaml.safe_load(text)
    names = {app["name"] for app in config["applications"]}
    assert names == {"gateway", "users", "follows", "posts", "feed"}
    feed = next(app for app in config["applications"] if app["name"] == "feed")
    supervisor = next(d for d in feed["deployments"] if d["name"] == "FanoutSupervisor")
    assert "fanout_workers" in supervisor["user_config"]


def test_serve_config_typos_and_bad_imports_fail(rendered: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load(
        rendered["cluster/overlays/prod:RayService/dmb"]["spec"]["serveConfigV2"]
    )
    config["applications"][0]["deployments"][0]["max_ongoing_request"] = 10
    assert any(
        "max_ongoing_request" in p
        for p in infra_checks.validate_serve_config(yaml.safe_dump(config))
    )
    config = yaml.safe_load(
        rendered["cluster/overlays/prod:RayService/dmb"]["spec"]["serveConfigV2"]
    )
    config["applications"][1]["import_path"] = "serve_apps.nope:build_app"
    assert any(
        "does not import" in p for p in infra_checks.validate_serve_config(yaml.safe_dump(config))
    )


def test_overlays_differ_only_in_what_must(rendered: dict[str, dict[str, Any]]) -> None:
    dev = rendered["cluster/overlays/dev:RayService/dmb"]
    prod = rendered["cluster/overlays/prod:RayService/dmb"]
    assert dev["spec"]["serveConfigV2"] == prod["spec"]["serveConfigV2"]
    assert dev["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    assert "serviceUnhealthySecondThreshold" not in dev["spec"]
    ports = {p["name"]: p["port"] for p in dev["spec"]["serveService"]["spec"]["ports"]}
    assert ports == {"serve": 8000, "serve-grpc": 9000}
    crds = rendered["cluster/argocd:Application/kuberay-crds"]
    assert "ServerSideApply=true" in crds["spec"]["syncPolicy"]["syncOptions"]
