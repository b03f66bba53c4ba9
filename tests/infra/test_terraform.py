"""Terraform and Terragrunt wiring, read from the HCL itself (no providers needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2
import pytest

TERRAFORM = Path(__file__).resolve().parents[2] / "terraform"
LIVE = TERRAFORM / "live"
SIZES_AND_COUNTS = {
    "single_nat_gateway",
    "node_instance_types",
    "node_min",
    "node_max",
    "db_instance_class",
    "db_replica_instance_class",
    "db_storage_gb",
    "db_multi_az",
    "redis_node_type",
    "redis_replicas",
    "kafka_brokers",
    "kafka_instance_type",
    "kafka_volume_gb",
}
IDENTITY = {"environment", "account_id", "vpc_cidr"}  # what names an environment, not its shape


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals' quotes (and quotes block labels): drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _load(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        parsed: dict[str, Any] = _unquote(hcl2.load(handle))
    return parsed


def _locals(path: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in _load(path)["locals"]:
        merged.update(block)
    return merged


@pytest.mark.parametrize(
    "path", sorted([*TERRAFORM.rglob("*.tf"), *TERRAFORM.rglob("*.hcl")]), ids=str
)
def test_every_file_parses(path: Path) -> None:
    assert isinstance(_load(path), dict)


def test_rds_parameter_group_turns_on_logical_replication() -> None:
    text = (TERRAFORM / "modules" / "rds" / "main.tf").read_text()
    parsed = _load(TERRAFORM / "modules" / "rds" / "main.tf")
    parameters = {
        p["name"]: p["value"] for block in parsed["locals"] for p in block.get("cdc_parameters", [])
    }
    assert parameters["rds.logical_replication"] == "1"
    assert int(parameters["max_replication_slots"]) >= 1
    modules = {name: body for block in parsed["module"] for name, body in block.items()}
    assert "local.cdc_parameters" in str(modules["primary"]["parameters"])
    assert "replicate_source_db" in modules["replica"]
    assert "rds.logical_replication" in text


def test_each_environment_has_the_same_units_wired_the_same_way() -> None:
    dev = {
        p.relative_to(LIVE / "dev"): p.read_text() for p in (LIVE / "dev").rglob("terragrunt.hcl")
    }
    prod = {
        p.relative_to(LIVE / "prod"): p.read_text() for p in (LIVE / "prod").rglob("terragrunt.hcl")
    }
    assert dev == prod
    assert {str(p.parent) for p in dev} == {
        "vpc",
        "eks",
        "rds",
        "elasticache",
        "msk",
        "iam",
        "addons",
    }


def test_prod_differs_from_dev_only_in_sizes_and_counts() -> None:
    dev, prod = _locals(LIVE / "dev" / "env.hcl"), _locals(LIVE / "prod" / "env.hcl")
    assert dev.keys() == prod.keys()
    differing = {key for key in dev if dev[key] != prod[key]}
    assert differing - IDENTITY <= SIZES_AND_COUNTS
    assert differing & SIZES_AND_COUNTS  # prod really is bigger somewhere


def test_units_depend_on_what_they_use() -> None:
    common = LIVE / "_envcommon"
    deps = {
        path.stem: {name for block in _load(path).get("dependency", []) for name in block}
        for path in common.glob("*.hcl")
    }
    assert deps["vpc"] == set()
    assert deps["eks"] == {"vpc"}
    assert deps["rds"] == deps["elasticache"] == deps["msk"] == {"vpc", "eks"}
    assert deps["iam"] == {"eks", "msk"}
    assert deps["addons"] == {"eks", "iam"}


def test_root_configures_remote_state_and_tags() -> None:
    root = _load(LIVE / "root.hcl")
    state = root["remote_state"]
    state = state[0] if isinstance(state, list) else state
    assert state["backend"] == "s3"
    assert "dynamodb_table" in state["config"]
    assert "default_tags" in (LIVE / "root.hcl").read_text()
