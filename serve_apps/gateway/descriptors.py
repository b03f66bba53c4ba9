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


def comments(files: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Leading comments (from --include_source_info) of services, methods, messages (nested
    too), fields, enums and enum values, by full name: descriptions for OpenAPI."""
    found: dict[str, str] = {}
    for file in files.file:
        for location in file.source_code_info.location:
            text = location.leading_comments.strip()
            name = _name_at(file, list(location.path)) if text else None
            if name:
                found[name] = text
    return found


# Field numbers in descriptor.proto that a source location path walks through.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


def _name_at(file: descriptor_pb2.FileDescriptorProto, path: list[int]) -> str | None:
    """The full name of the element a SourceCodeInfo path points at (None: not a named one)."""
    prefix = file.package
    if len(path) < 2:
        return None
    kind, index, rest = path[0], path[1], path[2:]
    if kind == _FILE_SERVICE:
        service = file.service[index]
        name = f"{prefix}.{service.name}"
        if not rest:
            return name
        if len(rest) == 2 and rest[0] == _SERVICE_METHOD:
            return f"{name}.{service.method[rest[1]].name}"
        return None
    if kind == _FILE_ENUM:
        return _enum_name(file.enum_type[index], prefix, rest)
    if kind == _FILE_MESSAGE:
        message = file.message_type[index]
        name = f"{prefix}.{message.name}"
        while rest:
            if len(rest) < 2:
                return None
            kind, index, rest = rest[0], rest[1], rest[2:]
            if kind == _MESSAGE_FIELD:
                return f"{name}.{message.field[index].name}" if not rest else None
            if kind == _MESSAGE_ENUM:
                return _enum_name(message.enum_type[index], name, rest)
            if kind != _MESSAGE_NESTED:
                return None
            message = message.nested_type[index]
            name = f"{name}.{message.name}"
        return name
    return None


def _enum_name(
    enum: descriptor_pb2.EnumDescriptorProto, prefix: str, rest: list[int]
) -> str | None:
    name = f"{prefix}.{enum.name}"
    if not rest:
        return name
    if len(rest) == 2 and rest[0] == _ENUM_VALUE:
        return f"{prefix}.{enum.value[rest[1]].name}"  # values live in the enum's scope
    return None


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
    described = comments(files)
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
                    description=described.get(method.full_name, ""),
                )
                methods[spec.full_name] = spec
    return methods


def exposed(methods: Iterable[MethodSpec]) -> list[MethodSpec]:
    """Methods with at least one HTTP binding (internal methods have none)."""
    return [m for m in methods if m.rules]
