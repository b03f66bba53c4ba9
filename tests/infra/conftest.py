"""Shared fixtures for the offline infrastructure tests (no cluster, provider or network)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.infra import infra_checks

Rendered = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="session")
def rendered() -> Rendered:
    """Every kustomization folder checked by scripts/check-infra, rendered once."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl (with kustomize) is needed to render the manifests")
    if not (infra_checks.SCHEMAS / "kuberay-v1.7").is_dir():
        pytest.fail(f"schemas not found at {infra_checks.SCHEMAS} (see tests/infra/schemas)")
    return {path: infra_checks.render(path) for path in infra_checks.RENDERED}


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]
