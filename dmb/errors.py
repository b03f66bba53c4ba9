"""The error vocabulary of every layer: each error carries the gRPC status it maps to.

The lowest layer, beside settings and ids: stores raise `Unavailable`, the domain raises the rest.
The gRPC ingress sets the status on the call, and the gateway, which receives the same exception
through a DeploymentHandle, maps the status to HTTP (DESIGN.md §4): one mapping, two transports.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


class DomainError(Exception):
    """Base class: a failure the caller should see, with a clear message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[DomainError], tuple[str]]:
        # Keeps the subclass and message intact when Ray pickles it across processes.
        return (type(self), (self.message,))


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


@dataclass(frozen=True)
class FieldViolation:
    """One broken field rule: the field's path (`content`, `post_ids[2]`), what is wrong, and
    the rule's id (`string.max_len`), as `google.rpc.BadRequest.FieldViolation` carries them."""

    field: str
    description: str
    reason: str = ""


class InvalidFields(InvalidArgument):
    """A request that breaks the field rules declared in its .proto (protovalidate)."""

    def __init__(self, violations: tuple[FieldViolation, ...]) -> None:
        super().__init__(
            "invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in violations)
        )
        self.violations = violations

    def __reduce__(self) -> tuple[type[InvalidFields], tuple[tuple[FieldViolation, ...]]]:  # type: ignore[override]
        return (type(self), (self.violations,))


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TooManyAttempts(ResourceExhausted):
    """Refused for now: try again after `retry_after_seconds` (HTTP Retry-After, gRPC RetryInfo)."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def __reduce__(self) -> tuple[type[TooManyAttempts], tuple[str, int]]:  # type: ignore[override]
        return (type(self), (self.message, self.retry_after_seconds))


class Unavailable(DomainError):
    """A store did not answer in time; safe to retry."""

    code = grpc.StatusCode.UNAVAILABLE


class Internal(DomainError):
    """An unexpected failure, already logged where it happened; callers see no details."""
