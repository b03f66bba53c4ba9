"""The thin transport shared by every domain deployment: identity in, status codes out.

A deployment method is called two ways with the same request message:
- in-cluster by the gateway through a DeploymentHandle, with `caller=` set to the identity the
  gateway verified (handles are unreachable from outside the cluster, so this cannot be forged);
- from outside through Serve's gRPC ingress, with `grpc_context`: then the caller must present the
  same JWT in the `authorization` metadata, verified here exactly as the gateway does.
Domain errors become the gRPC status on the ingress path, and propagate unchanged to the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from dmb.domain.errors import DomainError, Unauthenticated
from dmb.domain.identity import Caller, TokenVerifier, bearer_token

T = TypeVar("T")
log = logging.getLogger("dmb.rpc")


def _metadata(grpc_context: Any, key: str) -> str | None:
    for name, value in grpc_context.invocation_metadata():
        if name.lower() == key:
            return str(value)
    return None


class RpcBoundary:
    """Resolves the caller and translates domain errors for one deployment."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def identify(self, grpc_context: Any, caller: Caller | None) -> Caller:
        """The verified caller: from the gateway (`caller`) or from gRPC metadata."""
        if caller is not None:
            return caller
        if grpc_context is None:
            raise Unauthenticated("no caller identity")
        return await self._verifier.verify(bearer_token(_metadata(grpc_context, "authorization")))

    async def run(
        self,
        grpc_context: Any,
        caller: Caller | None,
        handler: Callable[[Caller], Awaitable[T]],
    ) -> T:
        """Run an authenticated method body."""
        return await self.run_public(
            grpc_context, lambda: self._authenticated(grpc_context, caller, handler)
        )

    async def _authenticated(
        self, grpc_context: Any, caller: Caller | None, handler: Callable[[Caller], Awaitable[T]]
    ) -> T:
        return await handler(await self.identify(grpc_context, caller))

    async def run_public(self, grpc_context: Any, handler: Callable[[], Awaitable[T]]) -> T:
        """Run a method body that needs no caller; set the gRPC status on failure."""
        try:
            return await handler()
        except DomainError as exc:
            if grpc_context is not None:
                grpc_context.set_code(exc.code)
                grpc_context.set_details(exc.message)
            raise
        except Exception:
            log.exception("unexpected error")
            if grpc_context is not None:
                grpc_context.set_code(grpc.StatusCode.INTERNAL)
                grpc_context.set_details("internal error")
            raise
