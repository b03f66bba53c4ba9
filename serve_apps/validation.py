"""The field rules of every request, declared once in the .protos and checked at the boundary.

The rules are protovalidate's `buf.validate` annotations (proto/dmb/v1/*.proto); the same
descriptors feed `/openapi.json` (serve_apps.gateway.openapi), so what a client is told and what
the server enforces cannot drift apart. `serve_apps.rpc` checks every request before its method
runs, on the gRPC ingress and behind the gateway alike; rules that need the database
(uniqueness, existence, permissions) stay in the domain.
"""

from __future__ import annotations

import json
from typing import Any

import protovalidate
from google.protobuf.message import Message

from dmb.errors import FieldViolation, InvalidFields

# One validator per process: it compiles each message type's rules once and caches them.
_VALIDATOR = protovalidate.Validator()


def check(request: Message) -> None:
    """Raise InvalidFields naming every broken rule of `request` (nothing when it is valid)."""
    violations = _VALIDATOR.collect_violations(request)
    if violations:
        raise InvalidFields(tuple(_violation(v) for v in violations))


def _violation(violation: protovalidate.Violation) -> FieldViolation:
    proto = violation.proto
    elements = proto.field.elements if proto.field is not None else ()
    return FieldViolation(
        field=field_path(elements), description=proto.message or "", reason=proto.rule_id or ""
    )


def field_path(elements: Any) -> str:
    """`post_ids[2]`, `filter.min_pages`: proto field names, as protovalidate and grpc-gateway
    report them (AIP-193 field paths)."""
    parts = []
    for element in elements:
        part = str(element.field_name)
        if element.subscript is not None:
            part += f"[{json.dumps(element.subscript.value)}]"
        parts.append(part)
    return ".".join(parts)
