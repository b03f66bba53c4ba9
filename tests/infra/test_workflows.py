"""The GitHub workflows: the stages the issue asks for, with network checks that cannot pass by
default (they run only on GitHub; here we check that they are there and configured to fail)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the bare key `on` as True
    workflow: dict[str, Any] = {str(key): value for key, value in loaded.items() if key is not True}
    workflow["on"] = loaded.get(True, loaded.get("on"))
    return workflow


def _runs(workflow: dict[str, Any]) -> str:
    return "\n".join(
        str(step.get("run", "")) + str(step.get("uses", "")) + str(step.get("with", ""))
        for job in workflow["jobs"].values()
        for step in job["steps"]
    )


def test_every_workflow_is_least_privilege_by_default() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        assert _load(path.name)["permissions"] == {"contents": "read"}, path.name


def test_pull_request_runs_every_gate() -> None:
    workflow = _load("pull-request.yml")
    assert "pull_request" in workflow["on"]
    runs = _runs(workflow)
    assert "gitleaks" in runs
    assert "--exit-code 1" in runs
    assert "ruff check" in runs
    assert "bandit" in runs
    assert "semgrep scan" in runs
    assert "--error" in runs
    assert "pip-audit --strict" in runs
    assert ".ci/run" in runs  # unit + integration tests and scripts/check-infra
    assert "./.github/actions/schemas" in runs
    assert "trivy-action" in runs
    assert "'exit-code': '1'" in runs


def test_merge_builds_pushes_and_bumps_dev() -> None:
    workflow = _load("main.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert workflow["jobs"]["bump-dev"]["needs"] == "build-push"
    runs = _runs(workflow)
    assert "push': True" in runs
    assert "cd cluster/overlays/dev" in runs
    assert "kustomize edit set image" in runs


def test_tag_retags_by_digest_waits_for_approval_and_bumps_prod() -> None:
    workflow = _load("release.yml")
    assert workflow["on"]["push"]["tags"] == ["v*"]
    jobs = workflow["jobs"]
    assert "crane digest" in str(jobs["retag"]["steps"])
    assert "crane tag" in str(jobs["retag"]["steps"])
    assert jobs["promote-prod"]["needs"] == "retag"
    assert jobs["promote-prod"]["environment"] == "production"
    promote = str(jobs["promote-prod"]["steps"])
    assert "cd cluster/overlays/prod" in promote
    assert "dmb@${{ needs.retag.outputs.digest }}" in promote


def test_dast_fuzzes_the_openapi_document_of_dev_on_a_schedule() -> None:
    workflow = _load("dast.yml")
    assert workflow["on"]["schedule"]
    runs = _runs(workflow)
    assert 'schemathesis run "$BASE_URL/openapi.json"' in runs
    assert "curl --fail" in runs
