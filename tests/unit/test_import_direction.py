"""Imports flow one way: entrypoints -> transport/actors -> domain -> stores -> contracts.

A module may import its own layer or any layer below it, never one above. Checked from the
source (AST), so a violation fails here before it becomes a cycle at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lowest first. A module's layer is the longest prefix that matches.
LAYERS: list[tuple[str, ...]] = [
    ("dmb.v1", "dmb.settings", "dmb.ids"),  # contracts
    ("dmb.domain.errors",),  # the error vocabulary every layer may raise
    ("dmb.stores", "dmb.localstack"),  # store access and the local stack
    ("dmb.domain",),  # domain logic
    ("serve_apps", "actors"),  # transport and long-lived actors
    ("dmb.launcher", "dmb.cli", "dmb.codegen", "dmb.seed"),  # entrypoints / composition root
]


def _layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def _our_modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("dmb", "serve_apps", "actors"):
        for path in (ROOT / package).rglob("*.py"):
            if "dmb/v1" in path.as_posix() or path == ROOT / "dmb" / "__init__.py":
                continue
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found.append((module.removesuffix(".__init__"), path))
    return found


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize(("module", "path"), _our_modules(), ids=lambda v: str(v))
def test_no_module_imports_a_layer_above_its_own(module: str, path: Path) -> None:
    own = _layer_of(module)
    assert own is not None, f"{module} belongs to no layer: add it to LAYERS"
    for imported in _imports(path):
        layer = _layer_of(imported)
        if layer is not None:
            assert layer <= own, f"{module} (layer {own}) imports {imported} (layer {layer})"


def test_the_checker_catches_an_upward_import() -> None:
    domain = _layer_of("dmb.domain.users")
    transport = _layer_of("serve_apps.users")
    assert domain is not None
    assert transport is not None
    assert transport > domain
