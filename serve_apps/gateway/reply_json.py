"""Replies as canonical proto3 JSON, from a plan compiled once per message type.

`json_format.MessageToDict` decides, for every field of every message it prints, what kind of
field it is and how to print it; a home-feed page of 20 posts repeats those decisions for some
400 fields, and that was about a tenth of the gateway's CPU on feed pages (docs/PERFORMANCE.md,
2026-12-07). Here each message type is looked at once: per field its JSON name and one
converter, and the JSON defaults of the fields that are printed even when unset.

The document is the one `MessageToDict(message, always_print_fields_with_no_presence=True)`
gives, key order included: the set fields in field-number order (`ListFields`), then every unset
field without presence in declaration order. A type this plan does not cover (maps, floats,
bytes, groups, extensions, closed enums, enum values with options, well-known types other than
Timestamp) is printed by json_format, so the output never depends on which path ran;
tests/unit/test_reply_json.py compares the two on every message of our descriptor set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from serve_apps.gateway.descriptors import descriptor_of

Convert = Callable[[Any], Any]

_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_AS_IS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_STRING,
    }
)
_TIMESTAMP = "google.protobuf.Timestamp"


class _NotCovered(Exception):
    """A field this module leaves to json_format."""


class _Plan:
    """How one message type prints: converters by field number, and the unset defaults."""

    __slots__ = ("by_number", "defaults")

    def __init__(self) -> None:
        # field number -> (JSON name, converter of the field's whole value; None: as it is)
        self.by_number: dict[int, tuple[str, Convert | None]] = {}
        # fields printed when unset: (JSON name, JSON default, whether it is a fresh list)
        self.defaults: tuple[tuple[str, Any, bool], ...] = ()


_plans: dict[str, _Plan | None] = {}  # full name -> plan, or None: json_format prints it


def message_document(message: Message) -> Any:
    """`message` as canonical JSON (lowerCamelCase, int64 as strings, defaults included)."""
    plan = _plan_of(descriptor_of(type(message)))
    if plan is None:
        return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _document(message, plan)


def compiled(message_type: type[Message]) -> bool:
    """Whether replies of this type are printed from a plan (False: json_format prints them)."""
    return _plan_of(descriptor_of(message_type)) is not None


def _document(message: Message, plan: _Plan) -> dict[str, Any]:
    document: dict[str, Any] = {}
    by_number = plan.by_number
    for field, value in message.ListFields():
        name, convert = by_number[field.number]
        document[name] = value if convert is None else convert(value)
    for name, default, fresh_list in plan.defaults:
        if name not in document:
            document[name] = [] if fresh_list else default
    return document


def _plan_of(descriptor: Descriptor) -> _Plan | None:
    """The compiled plan of a type, built on first use; None when json_format prints it."""
    full_name = descriptor.full_name
    if full_name in _plans:
        return _plans[full_name]
    plan: _Plan | None = None
    if not descriptor.file.name.startswith("google/protobuf/") and not descriptor.extension_ranges:
        try:
            plan = _compile(descriptor)
        except _NotCovered:
            plan = None
    _plans[full_name] = plan
    return plan


def _compile(descriptor: Descriptor) -> _Plan:
    plan = _Plan()
    defaults: list[tuple[str, Any, bool]] = []
    for field in descriptor.fields:
        convert = _converter(field)
        plan.by_number[field.number] = (field.json_name, _whole_value(convert, field.is_repeated))
        if not field.has_presence:
            default = None if field.is_repeated else _scalar_default(field, convert)
            defaults.append((field.json_name, default, field.is_repeated))
    plan.defaults = tuple(defaults)
    return plan


def _whole_value(convert: Convert | None, repeated: bool) -> Convert | None:
    if not repeated:
        return convert
    if convert is None:
        return list
    return lambda values: [convert(value) for value in values]


def _scalar_default(field: FieldDescriptor, convert: Convert | None) -> Any:
    return field.default_value if convert is None else convert(field.default_value)


def _converter(field: FieldDescriptor) -> Convert | None:
    """One value of the field -> its JSON value; None when the value is its own JSON."""
    if field.type in _AS_IS:
        return None
    if field.type in _INT64:
        return str
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return _enum_converter(field.enum_type)
    message_type = field.message_type
    is_map = message_type is not None and message_type.GetOptions().map_entry
    if field.type == FieldDescriptor.TYPE_MESSAGE and message_type is not None and not is_map:
        return _message_converter(message_type)
    raise _NotCovered(field.full_name)


def _enum_converter(enum: EnumDescriptor) -> Convert:
    if enum.is_closed or enum.full_name == "google.protobuf.NullValue":
        raise _NotCovered(enum.full_name)
    if any(value.has_options for value in enum.values):
        raise _NotCovered(enum.full_name)
    names = {value.number: value.name for value in enum.values}
    return lambda number: names.get(number, number)  # an open enum prints unknown numbers


def _message_converter(descriptor: Descriptor) -> Convert:
    if descriptor.full_name == _TIMESTAMP:
        return _timestamp_text
    return message_document  # its plan is looked up as it prints: recursive types need no care


_timestamp_texts: dict[tuple[int, int], str] = {}
_TIMESTAMP_TEXTS_KEPT = 50_000  # about 2 MB; feed pages show the same posts again and again


def _timestamp_text(timestamp: timestamp_pb2.Timestamp) -> str:
    """RFC 3339, as json_format prints it; remembered, since its datetime arithmetic is half
    the cost of printing a post."""
    key = (timestamp.seconds, timestamp.nanos)
    text = _timestamp_texts.get(key)
    if text is None:
        text = timestamp.ToJsonString()  # raises on an out-of-range timestamp, as json_format
        if len(_timestamp_texts) >= _TIMESTAMP_TEXTS_KEPT:
            _timestamp_texts.clear()
        _timestamp_texts[key] = text
    return text
