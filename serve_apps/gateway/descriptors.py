"""The service map, built from the compiled descriptor set with no per-endpoint code.

For every method: its input and output message classes, its `google.api.http` rules, whether it
is public (`dmb.v1.public`), and the Serve application implementing it (`dmb.v1.serve_app` on the
service; the ingress deployment is named after the service). Message classes come from the
default pool when the generated module is imported (so handles pickle them by reference), and
are built from the descriptors otherwise (a service added with no Python code of its own).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message

from dmb.v1 import options_pb2

DEFAULT_DESCRIPTOR_SET = Path(options_pb2.__file__).with_name("descriptor_set.binpb")


@dataclass(frozen=True)
class MethodSpec:
    service: str  # full name, e.g. dmb.v1.PostService
    name: str  # e.g. CreatePost
    input_type: type[Message]
    output_type: type[Message]
    rules: tuple[http_pb2.HttpRule, ...]
    public: bool
    app: str
    deployment: str
    description: str

    @property
    def full_name(self) -> str:
        return f"{self.service}.{self.name}"


def descriptor_of(message_type: type[Message]) -> Descriptor:
    """The message's descriptor (typed stubs report a union of two implementations)."""
    return cast(Descriptor, message_type.DESCRIPTOR)


def load_descriptor_set(path: Path = DEFAULT_DESCRIPTOR_SET) -> descriptor_pb2.FileDescriptorSet:
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(path.read_bytes())
    return files


def _import_generated(files: descriptor_pb2.FileDescriptorSet) -> None:
    """Import the generated module of each file where one exists (dmb/v1/x.proto -> dmb.v1.x_pb2).

    Requests must be instances of the generated classes: Ray pickles them by reference to send
    them to the service's replica, which could not import a class built on the fly.
    """
    for file in files.file:
        module = file.name.removesuffix(".proto").replace("/", ".") + "_pb2"
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(module)


def _pool_for(files: descriptor_pb2.FileDescriptorSet) -> descriptor_pool.DescriptorPool:
    """The default pool when it already knows these files, else a fresh pool with all of them."""
    _import_generated(files)
    default = descriptor_pool.Default()
    try:
        for file in files.file:
            default.FindFileByName(file.name)
        return default
    except KeyError:
        pool = descriptor_pool.DescriptorPool()
        for file in files.file:
            pool.Add(file)
        return pool


def _comments(files: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Leading comments of methods by full name (from --include_source_info), for OpenAPI."""
    found: dict[str, str] = {}
    for file in files.file:
        for location in file.source_code_info.location:
            path = list(location.path)
            # 6 = FileDescriptorProto.service, 2 = ServiceDescriptorProto.method
            if len(path) == 4 and path[0] == 6 and path[2] == 2:
                service = file.service[path[1]]
                method = service.method[path[3]]
                name = f"{file.package}.{service.name}.{method.name}"
                found[name] = location.leading_comments.strip()
    return found


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _rules(method: MethodDescriptor) -> tuple[http_pb2.HttpRule, ...]:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return ()
    rule = options.Extensions[annotations_pb2.http]
    return (rule, *rule.additional_bindings)


def build_service_map(files: descriptor_pb2.FileDescriptorSet) -> dict[str, MethodSpec]:
    """Every method of every service that names its Serve app, by full method name."""
    pool = _pool_for(files)
    comments = _comments(files)
    methods: dict[str, MethodSpec] = {}
    for file_proto in files.file:
        file = pool.FindFileByName(file_proto.name)
        for service in file.services_by_name.values():
            service_options = service.GetOptions()
            if not service_options.HasExtension(options_pb2.serve_app):
                continue
            app = service_options.Extensions[options_pb2.serve_app]
            for method in service.methods:
                spec = MethodSpec(
                    service=service.full_name,
                    name=method.name,
                    input_type=_message_class(method.input_type),
                    output_type=_message_class(method.output_type),
                    rules=_rules(method),
                    public=bool(method.GetOptions().Extensions[options_pb2.public]),
                    app=app,
                    deployment=service.name,
                    description=comments.get(method.full_name, ""),
                )
                methods[spec.full_name] = spec
    return methods


def exposed(methods: Iterable[MethodSpec]) -> list[MethodSpec]:
    """Methods with at least one HTTP binding (internal methods have none)."""
    return [m for m in methods if m.rules]
