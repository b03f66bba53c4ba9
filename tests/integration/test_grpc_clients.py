"""What a grpcurl or Postman user does, against the session's real Serve gRPC ingress.

Neither tool has our generated code: they learn the services by server reflection (Serve's
gRPC ingress serves it; behind HAProxy every call, reflection included, is routed by the
`application` metadata, so the user sends it: `grpcurl -H 'application: posts' ...`) or from the
published descriptor set (`-protoset dmb/v1/descriptor_set.binpb`). These tests do the same
steps, `list`, `describe` and a call, with message classes built only from what they learned.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from buf.validate import validate_pb2
from entrypoints.launcher import LocalSystem
from serve_apps.gateway.descriptors import DEFAULT_DESCRIPTOR_SET
from tests.integration.helpers import make_users

SERVICES = {
    "dmb.v1.UserService",
    "dmb.v1.FollowService",
    "dmb.v1.PostService",
    "dmb.v1.FeedService",
    "dmb.v1.NotificationService",
}


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class Header(grpc.StreamStreamClientInterceptor):
    """`grpcurl -H 'application: posts'`: one metadata entry on every call of the channel."""

    def __init__(self, key: str, value: str) -> None:
        self._entry = (key, value)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]
    ) -> Any:
        metadata = [*(details.metadata or ()), self._entry]
        return continuation(
            _Details(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
                details.compression,
            ),
            requests,
        )


@pytest.fixture(scope="module")
def address(serve_system: LocalSystem, grpc_channel: grpc.Channel) -> str:
    """The ingress address, once it routes to every application (grpc_channel waits)."""
    return str(serve_system.addresses()["grpc"])


def _call(
    channel: grpc.Channel,
    pool: descriptor_pool.DescriptorPool,
    method: str,
    fields: dict[str, Any],
    metadata: tuple[tuple[str, str], ...],
) -> Any:
    """A unary call made from descriptors alone (as grpcurl -d '{...}' does)."""
    service_name, name = method.rsplit(".", 1)
    descriptor = pool.FindServiceByName(service_name).methods_by_name[name]
    request_type = message_factory.GetMessageClass(descriptor.input_type)
    reply_type = message_factory.GetMessageClass(descriptor.output_type)
    stub: grpc.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
        f"/{service_name}/{name}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=reply_type.FromString,
    )
    return stub(request_type(**fields), metadata=metadata, timeout=60)


def test_reflection_lists_describes_and_calls_like_grpcurl(
    address: str, database_url: str, issue_token: Callable[[int], str]
) -> None:
    (author,) = make_users(database_url, 1)
    with grpc.insecure_channel(address) as raw:
        channel = grpc.intercept_channel(raw, Header("application", "posts"))
        reflected = ProtoReflectionDescriptorDatabase(channel)
        # grpcurl -plaintext -H 'application: posts' HOST list
        assert set(reflected.get_services()) >= SERVICES
        # grpcurl ... describe dmb.v1.PostService / dmb.v1.CreatePostRequest
        pool = descriptor_pool.DescriptorPool(reflected)
        service = pool.FindServiceByName("dmb.v1.PostService")
        assert {"CreatePost", "GetPost", "ListComments"} <= set(service.methods_by_name)
        file = reflected.FindFileContainingSymbol("dmb.v1.CreatePostRequest")
        (request,) = [m for m in file.message_type if m.name == "CreatePostRequest"]
        options = descriptor_pb2.FieldOptions.FromString(
            request.field[0].options.SerializeToString()
        )
        rules = options.Extensions[validate_pb2.field]  # what `describe` prints with the field
        assert (rules.required, rules.string.max_len) == (True, 2000)
        # grpcurl ... -H 'authorization: Bearer $TOKEN' -d '{"content": "..."}' ... CreatePost
        auth = (("application", "posts"), ("authorization", f"Bearer {issue_token(author)}"))
        text = f"reflected {uuid.uuid4().hex[:8]}"
        created = _call(raw, pool, "dmb.v1.PostService.CreatePost", {"content": text}, auth)
        assert created.post.content == text
        read = _call(raw, pool, "dmb.v1.PostService.GetPost", {"post_id": created.post.id}, auth)
        assert read.post.author_id == author
        with pytest.raises(grpc.RpcError) as refused:
            _call(raw, pool, "dmb.v1.PostService.CreatePost", {"content": " "}, auth)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_published_descriptor_set_is_enough_to_call_every_service(address: str) -> None:
    """grpcurl -protoset dmb/v1/descriptor_set.binpb -H 'application: users' ... Register."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DEFAULT_DESCRIPTOR_SET.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    assert {
        s.full_name
        for f in files.file
        for s in pool.FindFileByName(f.name).services_by_name.values()
    } >= SERVICES
    name = f"p_{uuid.uuid4().hex[:12]}"
    users = (("application", "users"),)
    with grpc.insecure_channel(address) as channel:
        registered = _call(
            channel,
            pool,
            "dmb.v1.UserService.Register",
            {"username": name, "email": f"{name}@example.com", "password": "protoset pass"},
            users,
        )
        login = _call(
            channel,
            pool,
            "dmb.v1.UserService.Login",
            {"username": name, "password": "protoset pass"},
            users,
        )
        stats = _call(
            channel,
            pool,
            "dmb.v1.FollowService.GetStats",
            {"user_id": registered.user.id},
            (("application", "follows"), ("authorization", f"Bearer {login.access_token}")),
        )
    assert login.user_id == registered.user.id
    assert stats.follower_count == 0
