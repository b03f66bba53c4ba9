"""HTTP <-> protobuf transcoding with the proto3 canonical JSON mapping.

Path variables, the body (`*` or one field) and the remaining query parameters are merged into
one JSON object, then parsed by `json_format`, which names the offending field on any error. Query
and path values arrive as strings and are converted by the field's type first (bools, numbers,
repeated fields from repeated keys, nested fields from dotted names).

A route whose rule maps no `body` never reads one, as grpc-gateway does: clients send `{}` (or
anything) on a bodiless POST by habit. Hostile bodies are refused as 400, never a 500: JSON
nested deeper than `MAX_JSON_DEPTH`, integer literals past Python's digit limit, and messages
that would echo megabytes of input back are cut to `MAX_MESSAGE`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from serve_apps.gateway.descriptors import descriptor_of
from serve_apps.gateway.reply_json import message_document
from serve_apps.gateway.routes import Route

_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
# What a path or query integer may look like: Python's int() would also take "1_000", "+5",
# " 5" and non-ASCII digits ("٣"), which no client means as a number.
_DECIMAL = re.compile(r"-?[0-9]{1,20}", re.ASCII)
MAX_JSON_DEPTH = 32  # far beyond any request message here; json would recurse ~1000 deep
MAX_MESSAGE = 300  # characters of an error message: enough to name the field and the problem
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)


class TranscodeError(ValueError):
    """The request cannot become the method's input message; the message names the field."""

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        super().__init__(message)


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor:
    field = descriptor.fields_by_name.get(name) or next(
        (f for f in descriptor.fields if f.json_name == name), None
    )
    if field is None:
        raise TranscodeError(f"unknown field {name!r} for {descriptor.full_name}")
    return field


def _resolve(descriptor: Descriptor, path: str) -> list[FieldDescriptor]:
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in path.split("."):
        if current is None:
            raise TranscodeError(f"{path!r}: {fields[-1].name} has no fields")
        field = _field(current, part)
        fields.append(field)
        current = field.message_type
    return fields


def _scalar(field: FieldDescriptor, raw: str, name: str) -> Any:
    """A path or query string as the JSON value json_format expects for this field."""
    wrapped = field.message_type
    if wrapped is not None:
        if wrapped.full_name in _WRAPPERS:  # Int64Value etc.: convert as the value they wrap
            return _scalar(wrapped.fields_by_name["value"], raw, name)
        if not wrapped.full_name.startswith("google.protobuf."):
            raise TranscodeError(f"field {name!r} is a message and cannot be set from a string")
        return raw  # Timestamp, Duration, FieldMask: their JSON form is a string
    if field.type == FieldDescriptor.TYPE_BOOL:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise TranscodeError(f"field {name!r}: expected true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    if field.type in _FLOATS:
        try:
            return float(raw)
        except ValueError:
            raise TranscodeError(f"field {name!r}: expected a number, got {raw!r}") from None
    if field.enum_type is not None and _DECIMAL.fullmatch(raw):
        return int(raw)  # enums by number as well as by name, as grpc-gateway accepts
    if field.type in _INTEGERS and not _DECIMAL.fullmatch(raw):
        raise TranscodeError(f"field {name!r}: expected an integer, got {raw!r}")
    return raw  # strings, enum names, 32/64-bit ints (json_format parses them from strings)


def _assign(target: dict[str, Any], fields: list[FieldDescriptor], value: Any) -> None:
    for field in fields[:-1]:
        target = target.setdefault(field.name, {})
        if not isinstance(target, dict):
            raise TranscodeError(f"field {field.name!r} is set twice")
    target[fields[-1].name] = value


def request_message(
    route: Route,
    path_values: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    body: bytes,
) -> Message:
    """Build the method's input message from one HTTP request."""
    descriptor = descriptor_of(route.method.input_type)
    document: dict[str, Any] = {}
    bound: set[str] = set()
    if route.body:
        parsed = _json_body(body)
        if route.body == "*":
            if not isinstance(parsed, dict):
                raise TranscodeError("request body must be a JSON object")
            for key, value in parsed.items():
                name = _field(descriptor, key).name
                if name in document:
                    raise TranscodeError(f"field {name!r} is given twice in the body")
                document[name] = value
        else:
            document[_field(descriptor, route.body).name] = parsed
            bound.add(_field(descriptor, route.body).name)
    for path, raw in path_values.items():
        fields = _resolve(descriptor, path)
        _assign(document, fields, _scalar(fields[-1], raw, path))
        bound.add(fields[0].name)
    if query and route.body == "*":
        raise TranscodeError("query parameters are not accepted when the body is the message")
    _apply_query(descriptor, document, bound, query)
    _refuse_nulls(descriptor, document, "")
    message = route.method.input_type()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise TranscodeError(str(exc)) from None
    return message


_NULLABLE = frozenset({"google.protobuf.Value", "google.protobuf.NullValue"})


def _refuse_nulls(descriptor: Descriptor, document: Mapping[str, Any], prefix: str) -> None:
    """Refuse `null` where the document publishes a type that is not nullable.

    Proto3 JSON reads `null` as "the default value", so `{"bio": null}` would quietly mean
    `{"bio": ""}`: a request the OpenAPI document calls invalid (a string is required there),
    accepted. A client that means "not set" omits the field."""
    for key, value in document.items():
        field = descriptor.fields_by_name.get(key) or next(
            (f for f in descriptor.fields if f.json_name == key), None
        )
        if field is None:
            continue  # unknown: ParseDict names it
        path = f"{prefix}{field.json_name}"
        nested = field.message_type
        if value is None and (nested is None or nested.full_name not in _NULLABLE):
            raise TranscodeError(f"field {path!r}: null is not a value here; omit the field")
        if (
            nested is not None
            and isinstance(value, dict)
            and not nested.GetOptions().map_entry
            and nested.full_name not in _NULLABLE
            and not nested.full_name.startswith("google.protobuf.")
        ):
            _refuse_nulls(nested, value, f"{path}.")


def _apply_query(
    descriptor: Descriptor,
    document: dict[str, Any],
    bound: set[str],
    query: Sequence[tuple[str, str]],
) -> None:
    repeated: dict[str, list[Any]] = {}
    for key, raw in query:
        fields = _resolve(descriptor, key)
        if fields[0].name in bound:
            raise TranscodeError(f"field {key!r} is already bound by the path or body")
        leaf = fields[-1]
        value = _scalar(leaf, raw, ".".join(f.name for f in fields))
        if leaf.is_repeated:
            dotted = ".".join(f.name for f in fields)
            repeated.setdefault(dotted, []).append(value)
            _assign(document, fields, repeated[dotted])
        else:
            _assign(document, fields, value)


def _json_body(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body, object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TranscodeError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise TranscodeError(_TOO_DEEP) from None
    except ValueError as exc:  # an integer literal past sys.get_int_max_str_digits()
        raise TranscodeError(f"request body has a number json cannot read: {exc}") from None
    if _depth(parsed) > MAX_JSON_DEPTH:
        raise TranscodeError(_TOO_DEEP)
    return parsed


_TOO_DEEP = f"request body is nested more than {MAX_JSON_DEPTH} levels deep"


def _depth(document: Any) -> int:
    """How deeply arrays and objects nest (iteratively: the document may be ~1000 deep)."""
    deepest, pending = 0, [(document, 1)]
    while pending:
        node, level = pending.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                pending.extend((child, level + 1) for child in node)
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A repeated key would silently keep the last value; say so instead."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise TranscodeError(f"duplicate key {key!r} in the request body")
        document[key] = value
    return document


def response_document(route: Route, message: Message) -> Any:
    """The reply as canonical JSON (lowerCamelCase, int64 as strings, defaults included)."""
    document = message_document(message)
    if route.response_body:
        field = descriptor_of(type(message)).fields_by_name[route.response_body]
        return document.get(field.json_name)
    return document
