"""Compile the test-only protos at test time, as `dmb codegen` compiles the product's."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2

from entrypoints import codegen

TEST_PROTOS = Path(__file__).resolve().parent
LIBRARY = "testonly/v1/library.proto"


def compile_descriptor_set(out_dir: Path, proto: str = LIBRARY) -> descriptor_pb2.FileDescriptorSet:
    """protoc --include_imports --include_source_info into `out_dir`; the parsed set."""
    from grpc_tools import protoc

    out = out_dir / "descriptor_set.binpb"
    args = [
        "protoc",
        *(f"-I{path}" for path in [str(TEST_PROTOS), *codegen._include_paths()]),
        f"--descriptor_set_out={out}",
        "--include_imports",
        "--include_source_info",
        proto,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto}")
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(out.read_bytes())
    return files
