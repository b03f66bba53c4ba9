"""An OpenAPI 3 document derived from the same descriptors and routes the gateway serves."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from serve_apps.gateway.descriptors import descriptor_of
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


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {"Error": _ERROR}

    def ref(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        name = descriptor.full_name
        if name not in self.components:
            self.components[name] = {}  # placeholder first: recursive messages terminate
            self.components[name] = {
                "type": "object",
                "properties": {f.json_name: self.field(f) for f in descriptor.fields},
                "additionalProperties": False,
            }
        return {"$ref": f"#/components/schemas/{name}"}

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            schema = self.ref(field.message_type)
        elif field.enum_type is not None:
            schema = _enum(field.enum_type)
        else:
            schema = dict(_SCALARS[field.type])
        return {"type": "array", "items": schema} if field.is_repeated else schema


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
            "content": {"application/json": {"schema": schemas.ref(descriptor)}},
        }
    elif route.body:
        field = descriptor.fields_by_name[route.body]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.field(field)}},
        }
    if route.body != "*":
        for field in descriptor.fields:
            if field.name in path_fields or field.name == route.body:
                continue
            if field.message_type is not None and field.message_type.full_name not in _WELL_KNOWN:
                continue
            parameters.append(
                {
                    "name": field.json_name,
                    "in": "query",
                    "required": False,
                    "schema": schemas.field(field),
                }
            )
    if not method.public:
        operation["security"] = [{"bearerAuth": []}]
        operation["responses"]["401"] = {"description": "Missing, invalid or revoked token"}
    operation["responses"]["429"] = {"description": "Rate limited (see Retry-After)"}
    return operation


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


def build_document(routes: list[Route], title: str = "dmb API") -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for route in routes:
        base = f"{route.method.deployment}_{route.method.name}"
        seen[base] = seen.get(base, 0) + 1
        operation_id = base if seen[base] == 1 else f"{base}_{seen[base]}"
        paths.setdefault(_openapi_path(route), {})[route.verb.lower()] = _operation(
            route, schemas, operation_id
        )
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "Health of the gateway and each dependency",
            "responses": {"200": {"description": "healthy"}, "503": {"description": "degraded"}},
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
