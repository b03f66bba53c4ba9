"""Offline validation of the Kubernetes manifests and the Serve config (no cluster, no network).

- every object kustomize renders (both overlays, the platform objects, both Argo CD app sets)
  validates against its schema with unknown keys refused: the RayService against the KubeRay v1.7
  CRD (the schema's defaults applied first, then `additionalProperties: false` added to every
  object schema that lists properties), Argo CD / External Secrets / PodMonitor objects against
  the strict CRDs-catalog schemas, built-in kinds against kubernetes-validate's strict schemas;
- serveConfigV2 validates against Ray's ServeDeploySchema, plus a check for the keys that schema
  silently ignores; and every import path imports, every application builds, and
  the deployments the config names are the ones its application builds.

Usage: python -m tests.infra.infra_checks [--write-for-scanning DIR]
Exit status 1 on any problem. The schemas are vendored in tests/infra/schemas (where they come
from, and how to refresh them: its README.md); SCHEMAS_DIR reads them from elsewhere.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(os.environ.get("SCHEMAS_DIR", str(Path(__file__).with_name("schemas"))))
RENDERED = (
    "cluster/overlays/dev",
    "cluster/overlays/prod",
    "cluster/platform",
    "cluster/argocd/dev",
    "cluster/argocd/prod",
)
CATALOG = {
    ("argoproj.io", "Application"): "argoproj.io/application_v1alpha1.json",
    ("external-secrets.io", "ExternalSecret"): "external-secrets.io/externalsecret_v1.json",
    ("external-secrets.io", "SecretStore"): "external-secrets.io/secretstore_v1.json",
    ("external-secrets.io", "ClusterSecretStore"): "external-secrets.io/clustersecretstore_v1.json",
    ("monitoring.coreos.com", "PodMonitor"): "monitoring.coreos.com/podmonitor_v1.json",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
}
KUBERAY = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
BUILT_IN_GROUPS = ("", "apps", "networking.k8s.io", "policy", "rbac.authorization.k8s.io", "batch")
KUBERNETES_VERSION = "1.33.0"  # the EKS version in terraform/live/_envcommon/eks.hcl
Object = dict[str, Any]


def render(path: str) -> list[Object]:
    """The objects `kubectl kustomize` renders for one kustomization folder."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def strict(schema: Any) -> Any:
    """A copy of an OpenAPI schema that refuses keys it does not list."""
    if isinstance(schema, dict):
        result = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in result
            and "additionalProperties" not in result
            and not result.get("x-kubernetes-preserve-unknown-fields")
        ):
            result["additionalProperties"] = False
        return result
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def apply_defaults(schema: Object, value: Any) -> Any:
    """Fill in the schema's `default`s, as the API server does before it validates."""
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in list(value):
                if name not in schema.get("properties", {}):
                    value[name] = apply_defaults(extra, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


@cache
def kuberay_schema(kind: str) -> Object:
    crd = yaml.safe_load((SCHEMAS / "kuberay-v1.7" / KUBERAY[kind]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: Object = version["schema"]["openAPIV3Schema"]
    return schema


@cache
def catalog_schema(path: str) -> Object:
    schema: Object = json.loads((SCHEMAS / "crds-catalog" / path).read_text())
    return schema


def _errors(schema: Object, obj: Object) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.path])
    ]


def validate_object(obj: Object) -> list[str]:
    """Schema problems of one rendered object (empty when valid). Unknown kinds are problems."""
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.split("/")[0] if "/" in api_version else ""
    kind = str(obj.get("kind", ""))
    if group == "ray.io" and kind in KUBERAY:
        schema = kuberay_schema(kind)
        defaulted = apply_defaults(schema, copy.deepcopy(obj))
        return _errors(strict(schema), defaulted)
    if (group, kind) in CATALOG:
        return _errors(catalog_schema(CATALOG[(group, kind)]), obj)
    if group in BUILT_IN_GROUPS:
        return validate_built_in(obj)
    return [f"no schema known for {api_version} {kind}: add one to tests/infra/infra_checks.py"]


def validate_built_in(obj: Object) -> list[str]:
    import kubernetes_validate  # type: ignore[import-untyped]
    from kubernetes_validate.utils import (  # type: ignore[import-untyped]
        SchemaNotFoundError,
        ValidationError,
        VersionNotSupportedError,
    )

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        return [f"{path or '<root>'}: {exc.message}"]
    except (SchemaNotFoundError, VersionNotSupportedError) as exc:
        return [f"no Kubernetes {KUBERNETES_VERSION} schema: {exc}"]
    return []


# --- serveConfigV2 --------------------------------------------------------------------------


def _models_in(annotation: Any) -> list[Any]:
    if hasattr(annotation, "model_fields"):
        return [annotation]
    found: list[Any] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _models_in(arg)
    return found


def unknown_keys(data: Any, model: Any, where: str) -> list[str]:
    """Keys in `data` that the pydantic `model` does not declare (Serve would ignore them)."""
    if not isinstance(data, dict) or not hasattr(model, "model_fields"):
        return []
    problems: list[str] = []
    fields = model.model_fields
    aliases = {field.alias or name: name for name, field in fields.items()}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name not in fields:
            problems.append(f"{where}.{key}: unknown key (Serve would ignore it)")
            continue
        for candidate in _models_in(fields[name].annotation):
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                suffix = f"[{index}]" if isinstance(value, list) else ""
                problems += unknown_keys(item, candidate, f"{where}.{key}{suffix}")
    return problems


def _import(path: str) -> tuple[Any, str | None]:
    """The object named by `module:attribute` (or `module.attribute`), or why it is not there."""
    module, sep, attribute = path.partition(":")
    if not sep:
        module, _, attribute = path.rpartition(".")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        return None, f"{path}: does not import ({exc})"
    if not hasattr(loaded, attribute):
        return None, f"{path}: {module} has no attribute {attribute}"
    return getattr(loaded, attribute), None


def built_deployments(builder: Any, args: dict[str, Any], app_name: str) -> dict[str, Any]:
    """The deployments (name -> Deployment) that `builder(args)` makes, without starting Ray."""
    from ray.serve._private.build_app import build_app

    built = build_app(builder(args), name=app_name)
    return {deployment.name: deployment for deployment in built.deployments}


def check_imports(data: Object) -> list[str]:
    problems: list[str] = []
    for path in data.get("grpc_options", {}).get("grpc_servicer_functions", []):
        _, problem = _import(path)
        problems += [problem] if problem else []
    for app in data.get("applications", []):
        builder, problem = _import(app["import_path"])
        if problem:
            problems.append(problem)
            continue
        try:
            deployments = built_deployments(builder, app.get("args") or {}, app["name"])
        except Exception as exc:  # any failure to build is the finding
            problems.append(f"{app['import_path']}: building {app['name']} failed: {exc!r}")
            continue
        for entry in app.get("deployments", []):
            if entry["name"] not in deployments:
                problems.append(
                    f"applications[{app['name']}].deployments.{entry['name']}: the application "
                    f"builds no such deployment (it builds {sorted(deployments)})"
                )
    return problems


def validate_serve_config(text: str, imports: bool = True) -> list[str]:
    """Problems of a serveConfigV2 document (empty when valid)."""
    from ray.serve.schema import ServeDeploySchema

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"serveConfigV2 is not YAML: {exc}"]
    if not isinstance(data, dict):
        return ["serveConfigV2 is not a mapping"]
    problems: list[str] = []
    try:
        ServeDeploySchema.model_validate(data)
    except Exception as exc:  # pydantic's ValidationError lists every problem
        problems.append(f"ServeDeploySchema: {exc}")
    problems += unknown_keys(data, ServeDeploySchema, "serveConfigV2")
    if imports and not problems:
        problems += check_imports(data)
    return problems


# --- IaC scanning ---------------------------------------------------------------------------


def pod_templates(objects: list[Object]) -> list[Object]:
    """The RayService's head and worker pod templates as Pods, so IaC scanners see them too."""
    pods: list[Object] = []
    for obj in objects:
        if obj.get("kind") != "RayService":
            continue
        cluster = obj["spec"]["rayClusterConfig"]
        groups = [("head", cluster["headGroupSpec"])]
        groups += [(group["groupName"], group) for group in cluster.get("workerGroupSpecs", [])]
        for name, group in groups:
            template = copy.deepcopy(group["template"])
            metadata = template.get("metadata", {})
            metadata["name"] = f"{obj['metadata']['name']}-{name}"
            metadata["namespace"] = obj["metadata"].get("namespace", "default")
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": metadata,
                "spec": template["spec"],
            }
            pods.append(pod)
    return pods


def write_for_scanning(folder: Path) -> None:
    """Rendered manifests plus the RayService pod templates, one file per kustomization."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in RENDERED:
        objects = render(path)
        documents = objects + pod_templates(objects)
        (folder / (path.replace("/", "_") + ".yaml")).write_text(yaml.safe_dump_all(documents))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write-for-scanning", type=Path, help="write manifests for IaC scans")
    args = parser.parse_args(argv)
    if args.write_for_scanning:
        write_for_scanning(args.write_for_scanning)
        return 0
    if not (SCHEMAS / "kuberay-v1.7").is_dir() or not (SCHEMAS / "crds-catalog").is_dir():
        print(f"FAIL schemas not found at {SCHEMAS} (see tests/infra/schemas)", file=sys.stderr)
        return 1
    failures = 0
    for path in RENDERED:
        for obj in render(path):
            label = f"{path}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            problems = validate_object(obj)
            if obj.get("kind") == "RayService":
                problems += validate_serve_config(obj["spec"]["serveConfigV2"])
            for problem in problems:
                print(f"FAIL {label}: {problem}")
            failures += bool(problems)
            if not problems:
                print(f"ok   {label}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
