"""Offline validation of the Kubernetes manifests and the Serve config (no cluster, no network).

- every object kustomize renders for cluster/overlays/{dev,prod} and cluster/argocd validates
  against its schema with unknown keys refused: the RayService against the KubeRay v1.7 CRD
  (defaults applied first, then `additionalProperties: false` added to every object schema that
  lists properties), Argo CD / External Secrets / PodMonitor objects against the strict
  CRDs-catalog schemas, built-in kinds against kubernetes-validate's schemas in strict mode;
- serveConfigV2 validates against Ray's ServeDeploySchema, with a check for keys the schema
  would silently ignore, and every import path in it imports.

Usage: python scripts/infra_checks.py [--skip-imports]   (exit 1 on any problem)
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

ROOT = Path(__file__).resolve().parents[1]
# The shared folder sits beside the checkout (as in CI); SHARED_SCHEMAS_DIR overrides it.
SCHEMAS = Path(os.environ.get("SHARED_SCHEMAS_DIR", ROOT.parent / "shared" / "schemas"))
RENDERED = ("cluster/overlays/dev", "cluster/overlays/prod", "cluster/argocd")
CATALOG = {
    ("argoproj.io", "Application"): "argoproj.io/application_v1alpha1.json",
    ("external-secrets.io", "ExternalSecret"): "external-secrets.io/externalsecret_v1.json",
    ("external-secrets.io", "ClusterSecretStore"): "external-secrets.io/clustersecretstore_v1.json",
    ("monitoring.coreos.com", "PodMonitor"): "monitoring.coreos.com/podmonitor_v1.json",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
}
KUBERAY = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
KUBERNETES_VERSION = "1.33.0"


def render(path: str) -> list[dict[str, Any]]:
    output = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


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


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in the schema's `default`s, as the API server would before validating."""
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


@cache
def _kuberay_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / "kuberay-v1.7" / KUBERAY[kind]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@cache
def _catalog_schema(path: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / "crds-catalog" / path).read_text())
    return schema


def _errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]


def validate_object(obj: dict[str, Any]) -> list[str]:
    """Schema problems of one rendered object (empty when valid)."""
    group = obj.get("apiVersion", "").split("/")[0] if "/" in obj.get("apiVersion", "") else ""
    kind = obj.get("kind", "")
    if group == "ray.io" and kind in KUBERAY:
        schema = _kuberay_schema(kind)
        defaulted = apply_defaults(schema, copy.deepcopy(obj))
        return _errors(strict(schema), defaulted)
    if (group, kind) in CATALOG:
        return _errors(_catalog_schema(CATALOG[(group, kind)]), obj)
    if group in ("", "apps", "networking.k8s.io", "policy", "rbac.authorization.k8s.io", "batch"):
        import kubernetes_validate
        from kubernetes_validate.utils import ValidationError

        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except ValidationError as exc:
            return [str(exc.message)]
        return []
    return [
        f"no schema known for {obj.get('apiVersion')} {kind}: add one to scripts/infra_checks.py"
    ]


def _unknown_keys(data: Any, model: Any, where: str) -> list[str]:
    """Keys in `data` that the pydantic `model` does not declare (Serve would ignore them)."""
    if not isinstance(data, dict) or not hasattr(model, "model_fields"):
        return []
    problems = []
    fields = model.model_fields
    aliases = {f.alias or name: name for name, f in fields.items()}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name not in fields:
            problems.append(f"{where}.{key}: unknown key (Serve would ignore it)")
            continue
        annotation = fields[name].annotation
        for candidate in _models_in(annotation):
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                suffix = f"[{index}]" if isinstance(value, list) else ""
                problems += _unknown_keys(item, candidate, f"{where}.{key}{suffix}")
    return problems


def _models_in(annotation: Any) -> list[Any]:
    if hasattr(annotation, "model_fields"):
        return [annotation]
    found = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _models_in(arg)
    return found


def validate_serve_config(text: str, check_imports: bool = True) -> list[str]:
    from ray.serve.schema import ServeDeploySchema

    data = yaml.safe_load(text)
    problems: list[str] = []
    try:
        ServeDeploySchema.model_validate(data)
    except Exception as exc:  # pydantic's ValidationError lists every problem
        problems.append(f"ServeDeploySchema: {exc}")
    problems += _unknown_keys(data, ServeDeploySchema, "serveConfigV2")
    if check_imports:
        paths = [app["import_path"] for app in data.get("applications", [])]
        paths += [
            path.rsplit(".", 1)[0] + ":" + path.rsplit(".", 1)[1]
            for path in data.get("grpc_options", {}).get("grpc_servicer_functions", [])
        ]
        for path in paths:
            module, _, attribute = path.partition(":")
            try:
                if not hasattr(importlib.import_module(module), attribute):
                    problems.append(f"{path}: {module} has no attribute {attribute}")
            except ImportError as exc:
                problems.append(f"{path}: does not import ({exc})")
    return problems


def pod_templates(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RayService's head and worker pod templates as Pods, so IaC scanners see them too."""
    pods = []
    for obj in objects:
        if obj.get("kind") != "RayService":
            continue
        cluster = obj["spec"]["rayClusterConfig"]
        groups = [("head", cluster["headGroupSpec"])]
        groups += [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]
        for name, group in groups:
            template = copy.deepcopy(group["template"])
            metadata = template.get("metadata", {})
            metadata["name"] = f"{obj['metadata']['name']}-{name}"
            metadata["namespace"] = obj["metadata"].get("namespace", "default")
            pods.append(
                {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
            )
    return pods


def write_for_scanning(folder: Path) -> None:
    """Rendered manifests plus the RayService pod templates, one file per overlay."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in RENDERED:
        objects = render(path)
        documents = objects + pod_templates(objects)
        (folder / (path.replace("/", "_") + ".yaml")).write_text(yaml.safe_dump_all(documents))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-imports", action="store_true")
    parser.add_argument("--write-for-scanning", type=Path, help="write manifests for IaC scans")
    args = parser.parse_args()
    if args.write_for_scanning:
        write_for_scanning(args.write_for_scanning)
        return 0
    if not (SCHEMAS / "kuberay-v1.7").is_dir():
        print(f"FAIL schemas not found at {SCHEMAS} (set SHARED_SCHEMAS_DIR)", file=sys.stderr)
        return 1
    failures = 0
    for path in RENDERED:
        for obj in render(path):
            label = f"{path}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            problems = validate_object(obj)
            if obj.get("kind") == "RayService":
                problems += validate_serve_config(
                    obj["spec"]["serveConfigV2"], check_imports=not args.skip_imports
                )
            for problem in problems:
                print(f"FAIL {label}: {problem}")
            failures += bool(problems)
            if not problems:
                print(f"ok   {label}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
