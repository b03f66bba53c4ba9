"""The error vocabulary of every layer: each error carries the gRPC status it maps to.

The lowest layer, beside settings and ids: stores raise `Unavailable`, the domain raises the rest.
The gRPC ingress sets the status on the call, and the gateway, which receives the same exception
through a DeploymentHandle, maps the status to HTTP (DESIGN.md §4): one mapping, two transports.
"""

from __future__ import annotations

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


class Unavailable(DomainError):
    """A store did not answer in time; safe to retry."""

    code = grpc.StatusCode.UNAVAILABLE


class Internal(DomainError):
    """An unexpected failure, already logged where it happened; callers see no details."""
