"""Regenerate the Python stubs, gRPC servicers and descriptor set from `proto/`.

Generated code lives in the `dmb.v1` package (mirroring the proto package `dmb.v1`) and is
committed, so that a deployment needs no protoc. The vendored protos our files import
(`proto/third_party/`, e.g. protovalidate's `buf/validate/validate.proto`) are on the include
path and get Python modules of their own (`buf/validate/validate_pb2.py`), because protoc's
Python output imports every dependency by its proto path. `check()` regenerates into a scratch
folder and compares, so CI fails when someone edits a `.proto` and forgets to regenerate.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
THIRD_PARTY_ROOT = PROTO_ROOT / "third_party"
GENERATED_PACKAGE = Path("dmb") / "v1"
# Vendored protos compiled to Python (message classes and stubs only: they define no service).
VENDORED = ("buf/validate/validate.proto",)
GENERATED_DIRS = (GENERATED_PACKAGE, Path("buf") / "validate")
DESCRIPTOR_SET_NAME = "descriptor_set.binpb"
_HANDWRITTEN = {"__init__.py"}


class CodegenError(RuntimeError):
    """protoc failed, or the committed generated files differ from a fresh generation."""


def _include_paths() -> list[str]:
    """Our protos, the vendored ones, googleapis' annotations (from the wheel) and protobuf's
    well-known types."""
    import google.api
    import grpc_tools

    googleapis_root = Path(next(iter(google.api.__path__))).parent.parent
    well_known_root = Path(next(iter(grpc_tools.__path__))) / "_proto"
    return [str(PROTO_ROOT), str(THIRD_PARTY_ROOT), str(googleapis_root), str(well_known_root)]


def _mypy_plugins() -> list[str]:
    """mypy-protobuf's plugins sit beside the interpreter, which may not be on PATH."""
    bin_dir = Path(sys.executable).parent
    return [
        f"--plugin=protoc-gen-{name}={bin_dir / f'protoc-gen-{name}'}"
        for name in ("mypy", "mypy_grpc")
    ]


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc

    if protoc.main(["grpc_tools.protoc", *(f"-I{path}" for path in _include_paths()), *args]) != 0:
        raise CodegenError("protoc failed; see the messages above")


def generate(out_root: Path) -> list[Path]:
    """Run protoc for every `.proto` of ours under proto/ (and the vendored ones we import) and
    write the outputs below `out_root`."""
    protos = sorted(
        str(p.relative_to(PROTO_ROOT))
        for p in PROTO_ROOT.rglob("*.proto")
        if THIRD_PARTY_ROOT not in p.parents
    )
    if not protos:
        raise CodegenError(f"no .proto files under {PROTO_ROOT}")
    package_dir = out_root / GENERATED_PACKAGE
    package_dir.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            *_mypy_plugins(),
            f"--python_out={out_root}",
            f"--grpc_python_out={out_root}",
            f"--mypy_out={out_root}",
            f"--mypy_grpc_out={out_root}",
            f"--descriptor_set_out={package_dir / DESCRIPTOR_SET_NAME}",
            "--include_imports",
            "--include_source_info",
            *protos,
        ]
    )
    _protoc([*_mypy_plugins(), f"--python_out={out_root}", f"--mypy_out={out_root}", *VENDORED])
    return sorted(
        p for folder in GENERATED_DIRS for p in (out_root / folder).iterdir() if p.is_file()
    )


def regenerate() -> list[Path]:
    """Replace the generated files in the source tree with a fresh generation."""
    for folder in GENERATED_DIRS:
        target = REPO_ROOT / folder
        for stale in target.iterdir() if target.exists() else []:
            if stale.is_file() and stale.name not in _HANDWRITTEN:
                stale.unlink()
    return generate(REPO_ROOT)


def _files(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {p.name for p in folder.iterdir() if p.is_file() and p.name not in _HANDWRITTEN}


def check(tree_root: Path = REPO_ROOT) -> list[str]:
    """Return the generated files that are missing, stale or extra (empty when up to date),
    named by their path below the tree (`dmb/v1/posts_pb2.py`)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        for folder in GENERATED_DIRS:
            fresh_dir, target = Path(scratch) / folder, tree_root / folder
            fresh, committed = _files(fresh_dir), _files(target)
            problems += [f"missing: {folder / name}" for name in sorted(fresh - committed)]
            problems += [f"extra: {folder / name}" for name in sorted(committed - fresh)]
            for name in sorted(fresh & committed):
                if not filecmp.cmp(fresh_dir / name, target / name, shallow=False):
                    problems.append(f"stale: {folder / name}")
    return problems


def main(check_only: bool) -> int:
    """Entry point of `dmb codegen`."""
    if not check_only:
        for path in regenerate():
            if path.name in _HANDWRITTEN:
                continue
            print(f"wrote {path.relative_to(REPO_ROOT)}")
        return 0
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("generated code is out of date: run `dmb codegen`", file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":  # pragma: no cover - convenience for `python -m entrypoints.codegen`
    sys.exit(main(check_only="--check" in sys.argv[1:]))
