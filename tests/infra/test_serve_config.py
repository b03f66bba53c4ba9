"""serveConfigV2: Ray's ServeDeploySchema, the keys it would silently ignore, and the imports."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import yaml

from tests.infra import infra_checks
from tests.infra.conftest import Rendered, find

APP_MODULES = (
    "serve_apps.gateway",
    "serve_apps.users",
    "serve_apps.follows",
    "serve_apps.posts",
    "serve_apps.feed",
    "actors.supervisor",
)


def _config(rendered: Rendered, overlay: str = "prod") -> dict[str, Any]:
    text = find(rendered[f"cluster/overlays/{overlay}"], "RayService")["spec"]["serveConfigV2"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def _problems(config: dict[str, Any]) -> list[str]:
    return infra_checks.validate_serve_config(yaml.safe_dump(config), imports=False)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_serve_config_matches_ray_schema_without_unknown_keys(
    rendered: Rendered, overlay: str
) -> None:
    assert _problems(_config(rendered, overlay)) == []


@pytest.mark.parametrize(
    ("where", "misspelled"),
    [
        (("applications", 0, "deployments", 0), "max_ongoing_request"),
        (("applications", 0, "deployments", 0, "ray_actor_options"), "num_cpu"),
        (("applications", 1, "deployments", 0, "autoscaling_config"), "target_ongoing_request"),
        (("grpc_options",), "grpc_servicer_function"),
        (("http_options",), "prot"),
        (("applications", 2), "route_prefx"),
        ((), "proxy_locaton"),
    ],
)
def test_misspelled_serve_key_is_rejected(
    rendered: Rendered, where: tuple[str | int, ...], misspelled: str
) -> None:
    config = _config(rendered)
    node: Any = config
    for step in where:
        node = node[step]
    node[misspelled] = 1
    problems = _problems(config)
    assert any(misspelled in problem and "unknown key" in problem for problem in problems)


def test_schema_violation_is_rejected(rendered: Rendered) -> None:
    config = _config(rendered)
    config["applications"][0]["deployments"][0]["max_ongoing_requests"] = "many"
    assert any("ServeDeploySchema" in problem for problem in _problems(config))


def test_bad_import_paths_are_rejected_without_the_apps() -> None:
    # Runs now, whether or not serve_apps exist: a module that is not there, an attribute that
    # is not there, and a gRPC servicer function that is not there are each a problem.
    config = {
        "applications": [
            {
                "name": "a",
                "import_path": "serve_apps.no_such_module:build_app",
                "route_prefix": "/a",
            },
            {"name": "b", "import_path": "json:no_such_builder", "route_prefix": "/b"},
        ],
        "grpc_options": {"port": 9000, "grpc_servicer_functions": ["json.no_such_function"]},
    }
    problems = infra_checks.validate_serve_config(yaml.safe_dump(config), imports=True)
    assert len(problems) == 3, problems
    assert "does not import" in problems[1]
    assert "has no attribute no_such_builder" in problems[2]
    assert "has no attribute no_such_function" in problems[0]


def test_every_import_path_imports_and_builds(rendered: Rendered) -> None:
    assert [name for name in APP_MODULES if importlib.util.find_spec(name) is None] == []
    for overlay in ("dev", "prod"):
        text = yaml.safe_dump(_config(rendered, overlay))
        assert infra_checks.validate_serve_config(text, imports=True) == []


def test_a_deployment_the_app_does_not_build_is_rejected(rendered: Rendered) -> None:
    config = _config(rendered)
    feed = next(app for app in config["applications"] if app["name"] == "feed")
    feed["deployments"].append({"name": "FeedServce", "num_replicas": 1})
    problems = infra_checks.validate_serve_config(yaml.safe_dump(config), imports=True)
    assert any("builds no such deployment" in problem for problem in problems), problems
