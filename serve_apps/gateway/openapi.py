"""An OpenAPI 3 document derived from the same descriptors and routes the gateway serves.

Paths and verbs from the route map; path parameters from template variables; query parameters
from the input message's remaining fields (nested message fields as dotted names, as the gateway
accepts them); request and response schemas from the messages (canonical JSON: int64 as
strings, enums by name); descriptions from the .proto comments; field constraints from the
protovalidate rules the services enforce (serve_apps.gateway.constraints); response `links`
(what a stateful client or fuzzer follows) from a naming convention, not per-endpoint code: a
reply that holds a resource `post` (a message with an `id`) links to every operation whose path
needs `post_id`, and a reply's own `user_id` (or a resource's `author_id`-style `<x>_id`
fields) to operations that need that variable. Replies of routes on `/me` are about the caller
and link only to reads: following yourself is refused by a rule the document cannot state.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from serve_apps.gateway import constraints
from serve_apps.gateway.descriptors import comments, descriptor_of
from serve_apps.gateway.routes import Route

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.FieldMask": {"type": "string"},
    # Wrappers: the JSON of the value they wrap, or null.
    "google.protobuf.DoubleValue": {"type": "number", "format": "double", "nullable": True},
    "google.protobuf.FloatValue": {"type": "number", "format": "float", "nullable": True},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64", "nullable": True},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64", "nullable": True},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32", "nullable": True},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "nullable": True},
    "google.protobuf.BoolValue": {"type": "boolean", "nullable": True},
    "google.protobuf.StringValue": {"type": "string", "nullable": True},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte", "nullable": True},
}
_ERROR = {
    "type": "object",
    "properties": {
        "code": {"type": "integer", "description": "gRPC status code"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["code", "message", "details"],
}


_MAX_QUERY_DEPTH = 3  # nested query parameters: a.b.c at most (recursive messages stop)


class _Schemas:
    def __init__(self, descriptions: dict[str, str]) -> None:
        self.components: dict[str, Any] = {"Error": _ERROR}
        self.descriptions = descriptions

    def ref(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        name = descriptor.full_name
        if name not in self.components:
            self.components[name] = {}  # placeholder first: recursive messages terminate
            schema: dict[str, Any] = {
                "type": "object",
                "properties": {f.json_name: self.described(f) for f in descriptor.fields},
                "additionalProperties": False,
            }
            required = [f.json_name for f in descriptor.fields if constraints.is_required(f)]
            if required:
                schema["required"] = required
            if name in self.descriptions:
                schema["description"] = self.descriptions[name]
            self.components[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def described(self, field: FieldDescriptor) -> dict[str, Any]:
        """The field's schema with its comment (a $ref cannot carry siblings in 3.0: allOf)."""
        schema = self.field(field)
        text = self.descriptions.get(field.full_name)
        if not text:
            return schema
        if "$ref" in schema:
            return {"allOf": [schema], "description": text}
        return {**schema, "description": text}

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        rules = constraints.rules_of(field)
        if field.message_type is not None:
            schema = {**self.ref(field.message_type), **constraints.field_mask_keywords(rules)}
        elif field.enum_type is not None:
            schema = _enum(field.enum_type)
        else:
            item_rules = constraints.item_rules(rules) if field.is_repeated else rules
            schema = {**_SCALARS[field.type], **constraints.scalar_keywords(field, item_rules)}
        if field.is_repeated:
            return {"type": "array", "items": schema, **constraints.repeated_keywords(rules)}
        return schema


def _enum(enum: EnumDescriptor) -> dict[str, Any]:
    return {"type": "string", "enum": [value.name for value in enum.values]}


def _openapi_path(route: Route) -> str:
    return re.sub(
        r"\{([^}=]+)(=[^}]*)?\}",
        lambda m: "{" + m.group(1) + "}",
        route.template.source,
    )


def _operation(route: Route, schemas: _Schemas, operation_id: str) -> dict[str, Any]:
    method = route.method
    descriptor = descriptor_of(method.input_type)
    path_fields = {v.field_path.split(".")[0] for v in route.template.variables}
    parameters: list[dict[str, Any]] = [
        {
            "name": variable.field_path,
            "in": "path",
            "required": True,
            "schema": schemas.field(_leaf(descriptor, variable.field_path)),
        }
        for variable in route.template.variables
    ]
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": method.description.split("\n")[0] if method.description else method.name,
        "description": method.description or method.full_name,
        "tags": [method.deployment],
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": _response_schema(route, schemas)}},
            },
            "default": {
                "description": "Error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    }
    if route.body == "*":
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _body(descriptor, path_fields, schemas)}},
        }
    elif route.body:
        field = descriptor.fields_by_name[route.body]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.field(field)}},
        }
    if route.body != "*":
        bound = path_fields | ({route.body} if route.body else set())
        parameters.extend(_query_parameters(descriptor, schemas, bound))
    if not method.public:
        operation["security"] = [{"bearerAuth": []}]
        operation["responses"]["401"] = {"description": "Missing, invalid or revoked token"}
    operation["responses"]["429"] = {"description": "Rate limited (see Retry-After)"}
    return operation


def _body(descriptor: Descriptor, path_fields: set[str], schemas: _Schemas) -> dict[str, Any]:
    """The whole input message as the body, less the fields its path binds (the path wins, as
    in grpc-gateway, so the body does not offer them)."""
    reference = schemas.ref(descriptor)
    bound = {f.json_name for f in descriptor.fields if f.name in path_fields}
    if not bound:
        return reference
    schema = dict(schemas.components[descriptor.full_name])
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in bound}
    if "required" in schema:
        schema["required"] = [name for name in schema["required"] if name not in bound]
    return schema


def _query_parameters(
    descriptor: Descriptor, schemas: _Schemas, bound: set[str], prefix: str = "", depth: int = 1
) -> list[dict[str, Any]]:
    """Fields left for the query string: scalars, enums, repeated scalars, and the fields of
    singular nested messages as dotted names (`filter.minPages`)."""
    found: list[dict[str, Any]] = []
    for field in descriptor.fields:
        if not prefix and field.name in bound:
            continue
        name = prefix + field.json_name
        nested = field.message_type
        if nested is not None and nested.full_name not in _WELL_KNOWN:
            if not field.is_repeated and depth < _MAX_QUERY_DEPTH:
                found.extend(_query_parameters(nested, schemas, bound, name + ".", depth + 1))
            continue
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": constraints.is_required(field),
            "schema": schemas.field(field),
        }
        if field.is_repeated:
            parameter.update(style="form", explode=True)
        if field.full_name in schemas.descriptions:
            parameter["description"] = schemas.descriptions[field.full_name]
        found.append(parameter)
    return found


def _leaf(descriptor: Descriptor, path: str) -> FieldDescriptor:
    field = None
    current: Descriptor | None = descriptor
    for part in path.split("."):
        assert current is not None
        field = current.fields_by_name[part]
        current = field.message_type
    assert field is not None
    return field


def _response_schema(route: Route, schemas: _Schemas) -> dict[str, Any]:
    output = descriptor_of(route.method.output_type)
    if route.response_body:
        return schemas.field(output.fields_by_name[route.response_body])
    return schemas.ref(output)


def _id_sources(route: Route) -> dict[str, str]:
    """Path variable name -> JSON pointer into this route's reply, by the naming convention."""
    if route.response_body:
        return {}
    output = descriptor_of(route.method.output_type)
    sources: dict[str, str] = {}
    for field in output.fields:
        if field.is_repeated:
            continue
        resource = field.message_type
        if resource is None:
            if field.name.endswith("_id"):
                sources.setdefault(field.name, f"/{field.json_name}")
            continue
        if "id" in resource.fields_by_name:
            sources[f"{field.name}_id"] = f"/{field.json_name}/id"
        for inner in resource.fields:
            if inner.name.endswith("_id") and not inner.is_repeated:
                sources.setdefault(inner.name, f"/{field.json_name}/{inner.json_name}")
    return sources


def _about_the_caller(route: Route) -> bool:
    """A route on `/me` answers about the caller: its ids are the caller's own."""
    return "me" in route.template.source.strip("/").split("/")


def _links(route: Route, routes: list[Route], operation_ids: dict[int, str]) -> dict[str, Any]:
    sources = _id_sources(route)
    links: dict[str, Any] = {}
    for target in routes:
        needed = [v.field_path for v in target.template.variables]
        if target is route or not needed or not all(name in sources for name in needed):
            continue
        if _about_the_caller(route) and target.verb != "GET":
            continue  # your own id leads to your own pages, not to acts on yourself (follow)
        links[operation_ids[id(target)]] = {
            "operationId": operation_ids[id(target)],
            "parameters": {name: f"$response.body#{sources[name]}" for name in needed},
        }
    return links


def build_document(
    routes: list[Route],
    files: descriptor_pb2.FileDescriptorSet | None = None,
    title: str = "dmb API",
) -> dict[str, Any]:
    """The whole document; `files` (with source info) adds the .proto comments."""
    schemas = _Schemas(comments(files) if files is not None else {})
    paths: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    operation_ids: dict[int, str] = {}
    for route in routes:
        base = f"{route.method.deployment}_{route.method.name}"
        seen[base] = seen.get(base, 0) + 1
        operation_ids[id(route)] = base if seen[base] == 1 else f"{base}_{seen[base]}"
    for route in routes:
        operation = _operation(route, schemas, operation_ids[id(route)])
        links = _links(route, routes, operation_ids)
        if links:
            operation["responses"]["200"]["links"] = links
        paths.setdefault(_openapi_path(route), {})[route.verb.lower()] = operation
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "Health of the gateway and each dependency",
            "responses": {"200": {"description": "healthy"}, "503": {"description": "degraded"}},
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3 document"}},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": "v1"},
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
