"""Two gateway replicas share no token cache: a token logged out through one is refused by the
other on its very next request, even though the other has the token's signature check cached
(issue 12 item 7). The verified-token cache skips only the signature check; the denylist is read
in the admission round trip of every request."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from dmb.composition import Components
from dmb.domain.identity import Caller
from dmb.settings import Settings
from dmb.stores.read_your_writes import WritePosition
from dmb.v1 import users_pb2
from serve_apps.gateway.core import GatewayCore
from serve_apps.gateway.descriptors import MethodSpec


class Accounts:
    """Stands in for the users service, but logs out through the real account domain (Redis)."""

    def __init__(self, settings: Settings) -> None:
        self._components = Components(settings)

    async def call(
        self,
        method: MethodSpec,
        request: Message,
        caller: Caller | None,
        write_position: WritePosition | None,
    ) -> Message:
        if method.full_name.endswith("Logout"):
            assert caller is not None
            assert isinstance(request, users_pb2.LogoutRequest)
            await self._components.ready()
            await self._components.accounts.logout(caller, request.refresh_token)
            return users_pb2.LogoutResponse()
        reply = method.output_type()
        if caller is not None and "user_id" in reply.DESCRIPTOR.fields_by_name:
            reply.user_id = caller.user_id  # type: ignore[attr-defined]
        return reply


def _replica(settings: Settings, stack: ExitStack) -> tuple[TestClient, GatewayCore]:
    """One gateway replica: its own core, verifier (and token cache) and Redis client."""
    core = GatewayCore.assemble(Components(settings), Accounts(settings))

    async def endpoint(request: Request) -> Response:
        return await core.handle(request)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])
    return stack.enter_context(TestClient(app)), core


def _counting_verifications(core: GatewayCore) -> list[str]:
    """Count the full (signature) verifications behind the replica's token cache."""
    verifier: Any = core._verifier
    calls: list[str] = []
    full = verifier._verify

    def counted(token: str) -> object:
        calls.append(token)
        return full(token)

    verifier._verify = counted
    return calls


def test_a_token_logged_out_through_one_replica_is_refused_by_the_other_at_once(
    settings: Settings, issue_token: Callable[[int], str]
) -> None:
    proxied = settings.with_overrides({"trusted_proxy_hops": 1})
    token = issue_token(21)
    auth = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "10.21.0.1"}
    with ExitStack() as stack:
        (a, _), (b, core_b) = _replica(proxied, stack), _replica(proxied, stack)
        verified_by_b = _counting_verifications(core_b)
        for _ in range(2):  # B verifies once, then answers from its cache
            assert b.get("/v1/users/21", headers=auth).status_code == 200
        assert verified_by_b == [token]

        logout = a.post("/v1/auth/logout", headers=auth, json={"refresh_token": "abc_123"})
        assert logout.status_code == 200, logout.text

        refused = b.get("/v1/users/21", headers=auth)
        assert refused.status_code == 401
        assert refused.json()["message"] == "access token has been revoked"
        assert verified_by_b == [token]  # refused although the signature check was a cache hit
        assert a.get("/v1/users/21", headers=auth).status_code == 401
