"""The generated-code staleness check that CI relies on must notice drift."""

from __future__ import annotations

import shutil
from pathlib import Path

from entrypoints import codegen


def _copy_generated(tmp_path: Path) -> Path:
    for folder in codegen.GENERATED_DIRS:
        shutil.copytree(codegen.REPO_ROOT / folder, tmp_path / folder)
    return tmp_path


def test_committed_code_is_up_to_date() -> None:
    assert codegen.check() == []


def test_an_edited_generated_file_is_reported_stale(tmp_path: Path) -> None:
    tree = _copy_generated(tmp_path)
    target = tree / "dmb" / "v1" / "posts_pb2.py"
    target.write_text(target.read_text() + "\n# hand edit\n")
    assert codegen.check(tree) == ["stale: dmb/v1/posts_pb2.py"]


def test_missing_and_extra_files_are_reported(tmp_path: Path) -> None:
    tree = _copy_generated(tmp_path)
    (tree / "dmb" / "v1" / "feed_pb2_grpc.py").unlink()
    (tree / "dmb" / "v1" / "old_pb2.py").write_text("")
    (tree / "buf" / "validate" / "validate_pb2.py").unlink()
    assert codegen.check(tree) == [
        "missing: dmb/v1/feed_pb2_grpc.py",
        "extra: dmb/v1/old_pb2.py",
        "missing: buf/validate/validate_pb2.py",
    ]


def test_the_vendored_validate_proto_is_compiled_and_in_the_descriptor_set() -> None:
    """Our protos import protovalidate's rules: their Python module and descriptor must ship."""
    from buf.validate import validate_pb2
    from serve_apps.gateway.descriptors import load_descriptor_set

    names = {file.name for file in load_descriptor_set().file}
    assert validate_pb2.DESCRIPTOR.name in names
