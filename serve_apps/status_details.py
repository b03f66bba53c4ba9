"""Rich error details, one shape on both transports: `google.rpc.BadRequest` field violations,
and `google.rpc.RetryInfo` for a refusal that says when to come back (a locked login).

On gRPC they travel in the `grpc-status-details-bin` trailer as a `google.rpc.Status` (what
grpcio-status, grpc-gateway and Envoy read); over HTTP they are the `details` of the error body,
rendered as protojson renders `Any` (`{"@type": "type.googleapis.com/google.rpc.BadRequest",
"fieldViolations": [...]}`), as grpc-gateway does.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from dmb.errors import DomainError, InvalidFields, TooManyAttempts


def details_of(error: DomainError) -> list[any_pb2.Any]:
    """The error's details as `Any` messages (empty for errors with nothing but a message)."""
    if isinstance(error, TooManyAttempts):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromSeconds(error.retry_after_seconds)
        return [_packed(retry)]
    if not isinstance(error, InvalidFields):
        return []
    return [
        _packed(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description, reason=v.reason
                    )
                    for v in error.violations
                ]
            )
        )
    ]


def _packed(detail: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def retry_after_header(error: DomainError) -> dict[str, str]:
    """`Retry-After` for an error that says when to come back (nothing otherwise)."""
    if isinstance(error, TooManyAttempts):
        return {"Retry-After": str(max(1, error.retry_after_seconds))}
    return {}


def status_of(error: DomainError) -> status_pb2.Status:
    """The `google.rpc.Status` of a domain error, for the gRPC status-details trailer."""
    return status_pb2.Status(
        code=error.code.value[0], message=error.message, details=details_of(error)
    )


def json_details(error: DomainError) -> list[dict[str, Any]]:
    """The `details` of the HTTP error body."""
    return [json_format.MessageToDict(detail) for detail in details_of(error)]
