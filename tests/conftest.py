"""Markers by folder, so each kind of test can be run alone:

    pytest -m unit          pure logic (tests/unit): seconds, no stores, no Ray
    pytest -m integration   against a real local stack (tests/integration)
    pytest -m infra         offline checks of manifests, Terraform and workflows (tests/infra)

The local-stack fixtures are defined in tests/integration/conftest.py only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_KINDS = ("unit", "integration", "infra")
_ROOT = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.path)).resolve().relative_to(_ROOT).parts[0]
        if folder in _KINDS:
            item.add_marker(getattr(pytest.mark, folder))
