"""Terraform and Terragrunt wiring, read from the HCL itself (no providers or modules needed)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
LIVE = TERRAFORM / "live"
MODULES = TERRAFORM / "modules"
UNITS = {"vpc", "eks", "rds", "elasticache", "msk", "iam", "addons", "secrets"}
# What prod may change relative to dev: sizes and counts, plus what names an environment.
SIZES_AND_COUNTS = {
    "single_nat_gateway",  # one NAT gateway or one per AZ
    "node_instance_types",
    "node_min",
    "node_max",
    "db_instance_class",
    "db_replica_instance_class",
    "db_storage_gb",
    "db_multi_az",  # a standby or none
    "redis_node_type",
    "redis_replicas",
    "kafka_brokers",
    "kafka_instance_type",
    "kafka_volume_gb",
}
IDENTITY = {"environment", "account_id", "vpc_cidr"}
DEPENDENCY_OUTPUT = re.compile(r"dependency\.(\w+)\.outputs\.(\w+)")
ENV_LOCAL = re.compile(r"local\.env\.(\w+)")


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals' quotes (and quotes block labels): drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


@cache
def _load(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        parsed: dict[str, Any] = _unquote(hcl2.load(handle))
    return parsed


def _blocks(parsed: dict[str, Any], kind: str) -> dict[str, Any]:
    """Labelled blocks (`variable "x" {}`) of one kind, by label."""
    found: dict[str, Any] = {}
    for block in parsed.get(kind, []):
        found.update(block)
    return found


def _module(name: str) -> dict[str, dict[str, Any]]:
    """A module's variables and outputs, from every .tf file in its folder."""
    variables: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for path in (MODULES / name).glob("*.tf"):
        variables |= _blocks(_load(path), "variable")
        outputs |= _blocks(_load(path), "output")
    return {"variables": variables, "outputs": outputs}


def _envcommon(unit: str) -> dict[str, Any]:
    return _load(LIVE / "_envcommon" / f"{unit}.hcl")


def _dependencies(unit: str) -> dict[str, Any]:
    return _blocks(_envcommon(unit), "dependency")


def _locals(path: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in _load(path)["locals"]:
        merged.update(block)
    return merged


@pytest.mark.parametrize(
    "path",
    sorted([*TERRAFORM.rglob("*.tf"), *TERRAFORM.rglob("*.hcl")]),
    ids=lambda p: str(p.relative_to(TERRAFORM)),
)
def test_every_file_parses(path: Path) -> None:
    assert isinstance(_load(path), dict)


def test_rds_parameter_group_turns_on_logical_replication() -> None:
    parsed = _load(MODULES / "rds" / "main.tf")
    local_values = {k: v for block in parsed["locals"] for k, v in block.items()}
    parameters = {p["name"]: p for p in local_values["cdc_parameters"]}
    assert parameters["rds.logical_replication"]["value"] == "1"
    assert parameters["rds.logical_replication"]["apply_method"] == "pending-reboot"
    assert int(parameters["max_replication_slots"]["value"]) >= 1
    assert int(parameters["max_wal_senders"]["value"]) >= 1
    modules = _blocks(parsed, "module")
    primary, replica = modules["primary"], modules["replica"]
    assert primary["source"] == replica["source"] == "terraform-aws-modules/rds/aws"
    assert primary["parameters"] == "${local.cdc_parameters}"
    assert primary["family"].startswith("postgres")
    assert replica["replicate_source_db"] == "${module.primary.db_instance_identifier}"
    assert primary["backup_retention_period"] >= 1  # a replica needs backups on the primary


def test_community_modules_are_used_and_pinned() -> None:
    sources = {}
    for path in MODULES.rglob("*.tf"):
        for name, body in _blocks(_load(path), "module").items():
            sources[f"{path.parent.name}.{name}"] = (body["source"], body.get("version"))
    assert sources, "no community modules"
    for name, (source, version) in sources.items():
        assert source.startswith("terraform-aws-modules/"), name
        assert version, name
        assert version.startswith("~>"), name
    used = {source.split("/")[1] for source, _ in sources.values()}
    assert {"vpc", "eks", "rds", "elasticache", "msk-kafka-cluster", "iam"} <= used


def test_vpc_has_three_tiers_over_three_azs_with_nat() -> None:
    vpc = _blocks(_load(MODULES / "vpc" / "main.tf"), "module")["vpc"]
    for tier in ("public_subnets", "private_subnets", "intra_subnets"):
        assert "var.azs" in vpc[tier]
    assert vpc["enable_nat_gateway"] is True
    validation = _module("vpc")["variables"]["azs"]["validation"][0]
    assert validation["condition"] == "${length(var.azs) == 3}"


def test_eks_has_irsa_and_node_autoscaling() -> None:
    eks_file = _load(MODULES / "eks" / "main.tf")
    modules = _blocks(eks_file, "module")
    assert modules["eks"]["enable_irsa"] is True
    assert "ray" in modules["eks"]["eks_managed_node_groups"]
    assert modules["cluster_autoscaler_irsa"]["attach_cluster_autoscaler_policy"] is True


def test_redis_has_tls_and_auth() -> None:
    redis = _blocks(_load(MODULES / "elasticache" / "main.tf"), "module")["redis"]
    assert redis["transit_encryption_enabled"] is True
    assert redis["at_rest_encryption_enabled"] is True
    assert redis["auth_token"] == "${random_password.auth.result}"


def test_addons_install_what_the_manifests_need() -> None:
    releases = {
        release["chart"]
        for block in _load(MODULES / "addons" / "main.tf")["resource"]
        for release in block.get("helm_release", {}).values()
    }
    assert {
        "kuberay-operator",
        "external-secrets",
        "cert-manager",
        "ingress-nginx",
        "cluster-autoscaler",
        "kube-prometheus-stack",
        "argo-cd",
    } <= releases


# --- Terragrunt -------------------------------------------------------------------------------


def test_each_environment_has_the_same_units_wired_the_same_way() -> None:
    dev = {p.relative_to(LIVE / "dev"): p.read_text() for p in (LIVE / "dev").rglob("*.hcl")}
    prod = {p.relative_to(LIVE / "prod"): p.read_text() for p in (LIVE / "prod").rglob("*.hcl")}
    assert dev.keys() == prod.keys()
    # every unit file is identical: the environments differ only in env.hcl
    differing = {str(path) for path in dev if dev[path] != prod[path]}
    assert differing == {"env.hcl"}
    assert {str(p.parent) for p in dev if p.name == "terragrunt.hcl"} == UNITS
    for path, _text in dev.items():
        if path.name == "terragrunt.hcl":
            unit = _load(LIVE / "dev" / path)
            includes = _blocks(unit, "include")
            assert includes["root"]["path"] == '${find_in_parent_folders("root.hcl")}'
            assert includes["envcommon"]["path"].endswith(f"/_envcommon/{path.parent}.hcl")


def test_prod_differs_from_dev_only_in_sizes_and_counts() -> None:
    dev, prod = _locals(LIVE / "dev" / "env.hcl"), _locals(LIVE / "prod" / "env.hcl")
    assert dev.keys() == prod.keys()
    differing = {key for key in dev if dev[key] != prod[key]}
    assert differing - IDENTITY <= SIZES_AND_COUNTS, differing - IDENTITY - SIZES_AND_COUNTS
    assert differing & SIZES_AND_COUNTS  # prod really is bigger somewhere
    assert dev["environment"] == "dev"
    assert prod["environment"] == "prod"


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_wiring(unit: str) -> None:
    common = _envcommon(unit)
    source = common["terraform"][0]["source"]
    assert source == f"${{get_repo_root()}}/terraform/modules/{unit}"
    module = _module(unit)
    text = (LIVE / "_envcommon" / f"{unit}.hcl").read_text()
    # every dependency output used, and every mock, is a real output of that unit's module
    for dep_name, dependency in _dependencies(unit).items():
        assert dependency["config_path"] == f"../{dep_name}"
        assert dependency["mock_outputs_allowed_terraform_commands"] == ["init", "validate", "plan"]
        outputs = _module(dep_name)["outputs"]
        assert set(dependency["mock_outputs"]) <= set(outputs), dep_name
    for dep_name, output in DEPENDENCY_OUTPUT.findall(text):
        assert dep_name in _dependencies(unit), f"{unit} uses {dep_name} without a dependency"
        assert output in _module(dep_name)["outputs"], f"{dep_name} has no output {output}"
    # every env.hcl value used exists in both environments
    for name in ENV_LOCAL.findall(text):
        for environment in ("dev", "prod"):
            assert name in _locals(LIVE / environment / "env.hcl"), name
    # inputs: each is a declared variable; every required variable gets a value
    inputs = set(common.get("inputs", {}))
    root_inputs = set(_load(LIVE / "root.hcl")["inputs"])
    declared = module["variables"]
    assert inputs <= set(declared), inputs - set(declared)
    required = {name for name, body in declared.items() if "default" not in body}
    assert required <= inputs | root_inputs, required - inputs - root_inputs


def test_dependency_graph_has_no_cycles() -> None:
    graph = {unit: set(_dependencies(unit)) for unit in UNITS}
    assert graph["vpc"] == set()
    assert graph["secrets"] == {"rds", "elasticache", "msk"}
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {unit for unit, deps in graph.items() if unit not in done and deps <= done}
        assert ready, f"cycle among {set(graph) - done}"
        done |= ready


def test_root_configures_remote_state_provider_and_tags() -> None:
    root = _load(LIVE / "root.hcl")
    state = root["remote_state"]
    state = state[0] if isinstance(state, list) else state
    assert state["backend"] == "s3"
    assert state["config"]["encrypt"] is True
    assert state["config"]["use_lockfile"] is True
    assert state["config"]["key"] == "${path_relative_to_include()}/terraform.tfstate"
    provider = _blocks(root, "generate")["provider"]["contents"]
    assert "allowed_account_ids" in provider
    assert "default_tags" in provider


def test_atlantis_plans_every_unit_and_applies_before_merge() -> None:
    config = yaml.safe_load((ROOT / "atlantis.yaml").read_text())
    projects = {project["name"]: project for project in config["projects"]}
    assert set(projects) == {f"{env}-{unit}" for env in ("dev", "prod") for unit in UNITS}
    assert config["automerge"] is False
    for name, project in projects.items():
        environment, unit = name.split("-", 1)
        assert project["dir"] == f"terraform/live/{environment}/{unit}"
        assert project["workflow"] == "terragrunt"
        assert project["autoplan"]["enabled"] is True
        assert set(project["apply_requirements"]) == {"approved", "mergeable"}
        assert f"../../_envcommon/{unit}.hcl" in project["autoplan"]["when_modified"]
        expected = {f"{environment}-{dep}" for dep in _dependencies(unit)}
        assert set(project.get("depends_on", [])) == expected
        for dep in expected:
            assert projects[dep]["execution_order_group"] < project["execution_order_group"]
    steps = config["workflows"]["terragrunt"]
    assert any("terragrunt plan" in str(step) for step in steps["plan"]["steps"])
    assert any("terragrunt apply" in str(step) for step in steps["apply"]["steps"])


def test_the_ingress_keeps_the_client_address_for_the_ip_bucket() -> None:
    """With the NLB's default (externalTrafficPolicy Cluster) every request reaches nginx from a
    node's address, and the per-IP bucket becomes one bucket per node."""
    releases = {
        name: release
        for block in _load(MODULES / "addons" / "main.tf")["resource"]
        for name, release in block.get("helm_release", {}).items()
    }
    values = "".join(str(v) for v in releases["ingress_nginx"]["values"])
    assert re.search(r"externalTrafficPolicy\s*=\s*\"?Local", values), values
    assert re.search(r"use-forwarded-headers\"?\s*=\s*\"?false", values), values
    kustomization = (TERRAFORM.parent / "cluster" / "base" / "kustomization.yaml").read_text()
    assert "DMB_TRUSTED_PROXY_HOPS=1" in kustomization  # nginx is the one trusted hop
