"""Two gateway replicas share no token cache: a token logged out through one is refused by the
other on its very next request, even though the other has the token's signature check cached
(issue 12 item 7). The verified-token cache skips only the signature check; the denylist is read
in the admission round trip of every request."""

from __future__ import annotations

from collections.abc import Callable
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

    def __init__(self, components: Components) -> None:
        self._components = components

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


REPLICA = "x-test-replica"  # which of the gateway cores answers a request


def _gateway(settings: Settings, replicas: int) -> tuple[TestClient, list[GatewayCore], Any]:
    """`replicas` gateway cores, each with its own components (verifier, token cache, Redis
    client), served by ONE app on ONE event loop, picked per request by a header. (One
    TestClient per replica gave each its own loop, and the stores opened on one of them hung
    the other's shutdown.) Returns the client, the cores and a coroutine that closes them."""
    owned = [Components(settings) for _ in range(replicas + 1)]
    accounts = Accounts(owned[-1])
    cores = [GatewayCore.assemble(components, accounts) for components in owned[:-1]]

    async def endpoint(request: Request) -> Response:
        return await cores[int(request.headers[REPLICA])].handle(request)

    async def close() -> None:
        for components in owned:
            await components.close()

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])
    return TestClient(app), cores, close


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
    client, (_, core_b), close = _gateway(proxied, replicas=2)
    a, b = {**auth, REPLICA: "0"}, {**auth, REPLICA: "1"}
    with client:
        try:
            verified_by_b = _counting_verifications(core_b)
            for _ in range(2):  # B verifies once, then answers from its cache
                assert client.get("/v1/users/21", headers=b).status_code == 200
            assert verified_by_b == [token]

            logout = client.post("/v1/auth/logout", headers=a, json={"refresh_token": "abc_123"})
            assert logout.status_code == 200, logout.text

            refused = client.get("/v1/users/21", headers=b)
            assert refused.status_code == 401
            assert refused.json()["message"] == "access token has been revoked"
            assert verified_by_b == [token]  # refused although the signature check was cached
            assert client.get("/v1/users/21", headers=a).status_code == 401
        finally:
            client.portal.call(close)  # type: ignore[union-attr]
