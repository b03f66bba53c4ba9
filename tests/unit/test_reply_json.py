"""The gateway's reply encoder prints exactly what json_format prints, key order included."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, json_format, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from dmb.v1 import feed_pb2, follows_pb2, notifications_pb2, posts_pb2, resources_pb2, users_pb2
from serve_apps.gateway.descriptors import descriptor_of
from serve_apps.gateway.reply_json import compiled, message_document

OUR_MODULES = (feed_pb2, follows_pb2, notifications_pb2, posts_pb2, resources_pb2, users_pb2)
SIGNED_64 = (0, 1, -1, 2**53 + 1, 2**63 - 1, -(2**63))
UNSIGNED_64 = (0, 1, 2**53 + 1, 2**64 - 1)
TEXTS = ("", "a", "ünïcödé ✓", 'quote " and \\ and \n', "x" * 300)


def our_message_types() -> list[type[Message]]:
    found: list[type[Message]] = []
    for module in OUR_MODULES:
        for name in module.DESCRIPTOR.message_types_by_name:
            found.append(getattr(module, name))
    return found


def _value(field: FieldDescriptor, rng: random.Random, depth: int) -> Any:
    kind = field.type
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return rng.choice(SIGNED_64)
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return rng.choice(UNSIGNED_64)
    if kind in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return rng.choice((0, 1, -1, 2**31 - 1, -(2**31)))
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return rng.choice((0, 1, 2**32 - 1))
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.choice((True, False))
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice(TEXTS)
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.choice((b"", b"\x00\xff", b"bytes"))
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice((0.0, 1.5, -2.25, float("inf"), float("nan")))
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        numbers = [value.number for value in field.enum_type.values]
        if not field.enum_type.is_closed:
            numbers.append(max(numbers) + 7)  # an open enum keeps numbers it does not name
        return rng.choice(numbers)
    raise AssertionError(f"no generator for {field.full_name}")


def fill(message: Message, rng: random.Random, depth: int = 0) -> Message:
    """Sets a random subset of the fields, some to their defaults, nested up to three deep."""
    descriptor: Descriptor = descriptor_of(type(message))
    if descriptor.full_name == "google.protobuf.Timestamp":
        assert isinstance(message, timestamp_pb2.Timestamp)
        message.seconds = rng.randrange(0, 4_000_000_000)
        message.nanos = rng.choice((0, 1_000, 123_456_789))
        return message
    for field in descriptor.fields:
        if rng.random() < 0.25:
            continue
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_message and depth >= 3:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            container = getattr(message, field.name)
            for _ in range(rng.randrange(3)):
                key = _value(field.message_type.fields_by_name["key"], rng, depth)
                value_field = field.message_type.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    fill(container[key], rng, depth + 1)
                else:
                    container[key] = _value(value_field, rng, depth)
        elif field.is_repeated:
            container = getattr(message, field.name)
            for _ in range(rng.randrange(4)):
                if is_message:
                    fill(container.add(), rng, depth + 1)
                else:
                    container.append(_value(field, rng, depth))
        elif is_message:
            fill(getattr(message, field.name), rng, depth + 1)
            if rng.random() < 0.2:  # present but empty
                getattr(message, field.name).Clear()
                getattr(message, field.name).SetInParent()
        else:
            setattr(message, field.name, _value(field, rng, depth))
    return message


def expected(message: Message) -> Any:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


@pytest.mark.parametrize("message_type", our_message_types(), ids=lambda t: t.__name__)
def test_every_message_of_ours_prints_as_json_format_prints_it(
    message_type: type[Message],
) -> None:
    rng = random.Random(message_type.__name__)
    samples = [message_type()] + [fill(message_type(), rng) for _ in range(60)]
    for sample in samples:
        document = message_document(sample)
        assert document == expected(sample)
        assert json.dumps(document) == json.dumps(expected(sample))  # the same key order


def test_every_reply_of_ours_is_printed_from_a_plan() -> None:
    assert [t.__name__ for t in our_message_types() if not compiled(t)] == []


def test_a_home_feed_page_prints_ids_as_strings_and_unset_fields_as_defaults() -> None:
    page = feed_pb2.GetHomeFeedResponse(posts=[resources_pb2.Post(id=2**62, content="hi")])
    document = message_document(page)
    assert document == expected(page)
    assert document["posts"][0]["id"] == str(2**62)


@pytest.mark.parametrize(
    "message",
    [
        timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5),
        struct_pb2.Struct(fields={"a": struct_pb2.Value(number_value=1.5)}),
        descriptor_pb2.FileDescriptorProto(name="x.proto", package="p"),  # proto2, extensions
    ],
    ids=["timestamp", "struct", "proto2"],
)
def test_types_it_does_not_compile_are_printed_by_json_format(message: Message) -> None:
    assert not compiled(type(message))
    assert message_document(message) == expected(message)


def test_maps_floats_bytes_and_closed_enums_fall_back_to_json_format() -> None:
    rng = random.Random(7)
    for message_type in (
        descriptor_pb2.FieldDescriptorProto,  # closed enums (proto2)
        struct_pb2.Value,
    ):
        for _ in range(30):
            sample = fill(message_type(), rng)
            assert message_document(sample) == expected(sample)
