"""The generated-code staleness check that CI relies on must notice drift."""

from __future__ import annotations

import shutil
from pathlib import Path

from entrypoints import codegen


def _copy_generated(tmp_path: Path) -> Path:
    shutil.copytree(codegen.REPO_ROOT / codegen.GENERATED_PACKAGE, tmp_path / "dmb" / "v1")
    return tmp_path


def test_committed_code_is_up_to_date() -> None:
    assert codegen.check() == []


def test_an_edited_generated_file_is_reported_stale(tmp_path: Path) -> None:
    tree = _copy_generated(tmp_path)
    target = tree / "dmb" / "v1" / "posts_pb2.py"
    target.write_text(target.read_text() + "\n# hand edit\n")
    assert codegen.check(tree) == ["stale: posts_pb2.py"]


def test_missing_and_extra_files_are_reported(tmp_path: Path) -> None:
    tree = _copy_generated(tmp_path)
    (tree / "dmb" / "v1" / "feed_pb2_grpc.py").unlink()
    (tree / "dmb" / "v1" / "old_pb2.py").write_text("")
    assert codegen.check(tree) == ["missing: feed_pb2_grpc.py", "extra: old_pb2.py"]
