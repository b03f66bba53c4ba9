"""Every file or folder the docs name exists: a doc that points at a moved or deleted file is a
bug a newcomer meets first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `path/like/this.py` or `folder/`: backticked, rooted in a top-level folder we own, with a file
# extension or a trailing slash (so `dmb/secrets-revision`, an annotation, is not a path).
_TOP = (
    "dmb",
    "serve_apps",
    "actors",
    "entrypoints",
    "benchmarks",
    "tests",
    "proto",
    "cluster",
    "terraform",
    "scripts",
    "docs",
    ".github",
    ".ci",
)
_PATH = re.compile(r"`((?:" + "|".join(re.escape(t) for t in _TOP) + r")/[^`\s*<>{}]*)`")


def _named_paths(doc: Path) -> list[str]:
    found = []
    for raw in _PATH.findall(doc.read_text()):
        path = raw.split(":", 1)[0].rstrip(".,;)")  # `module.py:function` names the file
        if path.endswith("/"):
            found.append(path.rstrip("/"))
        elif "." in path.rsplit("/", 1)[-1]:
            found.append(path)
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_a_doc_names_exists(doc: Path) -> None:
    missing = [path for path in _named_paths(doc) if not (ROOT / path).exists()]
    assert missing == [], f"{doc.name} names paths that do not exist: {missing}"


def test_the_checker_finds_paths() -> None:
    assert "dmb/composition.py" in _named_paths(ROOT / "docs" / "ARCHITECTURE.md")
