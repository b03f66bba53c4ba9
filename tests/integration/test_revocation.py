"""Revocation is durable (issue 12, items 6 and 9): a logged-out access token and a revoked
refresh token stay refused after Redis is flushed, while Redis is down, and while it refuses
writes (out of memory), for the whole leeway the verifier accepts after `exp`; Redis is only a
cache of Postgres' `revoked_access_tokens`. In-process against the real stores (no Ray)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import psycopg
import pytest
import redis
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from dmb.composition import Components
from dmb.domain.identity import AccessTokenIssuer, Caller, denylist_key
from dmb.domain.revocation import PRUNE_MARGIN_SECONDS
from dmb.errors import Unauthenticated, Unavailable
from dmb.settings import Settings
from dmb.stores.read_your_writes import WritePosition
from serve_apps.gateway.core import GatewayCore
from serve_apps.gateway.descriptors import MethodSpec
from serve_apps.users import UserServiceDeployment

T = TypeVar("T")
PASSWORD = "revocation password"


def _run(settings: Settings, scenario: Callable[[Components], Awaitable[T]]) -> T:
    """Run `scenario` with fresh components (their clients bound to this loop), then close."""

    async def main() -> T:
        components = Components(settings)
        await components.ready()
        try:
            return await scenario(components)
        finally:
            await components.close()

    return asyncio.run(main())


async def _session(components: Components) -> tuple[str, str, Caller]:
    """A new account, logged in: (access token, refresh token, the token's caller)."""
    name = f"r_{uuid.uuid4().hex[:12]}"
    await components.accounts.register(name, f"{name}@example.com", PASSWORD)
    session = await components.accounts.login(name, PASSWORD)
    token = session.access.token
    return token, session.refresh_token, components.verifier.verify_signature(token)


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@contextmanager
def _out_of_memory(r: redis.Redis) -> Iterator[None]:
    """Redis refusing every write that could grow its data, as a full ElastiCache node does."""
    limit = str(r.config_get("maxmemory")["maxmemory"])
    policy = str(r.config_get("maxmemory-policy")["maxmemory-policy"])
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)
    try:
        yield
    finally:
        r.config_set("maxmemory", limit)
        r.config_set("maxmemory-policy", policy)


def test_after_flushall_a_logged_out_token_and_its_refresh_token_stay_refused(
    settings: Settings, r: redis.Redis, database_url: str
) -> None:
    async def scenario(components: Components) -> tuple[str, str]:
        token, refresh, caller = await _session(components)
        live, _, _ = await _session(components)
        await components.accounts.logout(caller, refresh)
        r.flushall()  # every cached revocation is gone
        with pytest.raises(Unauthenticated, match="revoked") as access:
            await components.verifier.verify(token)
        with pytest.raises(Unauthenticated) as refreshed:
            await components.accounts.refresh(refresh)
        assert (await components.verifier.verify(live)).revocation_checked
        return access.value.message, refreshed.value.message

    access, refreshed = _run(settings, scenario)
    assert access == "access token has been revoked"
    assert "refresh token" in refreshed


def test_the_revocation_is_in_postgres_until_exp_plus_the_leeway(
    settings: Settings, r: redis.Redis, database_url: str
) -> None:
    async def scenario(components: Components) -> tuple[str, int]:
        _, refresh, caller = await _session(components)
        await components.accounts.logout(caller, refresh)
        return caller.jti, caller.expires_at

    jti, exp = _run(settings, scenario)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM expires_at)::bigint FROM revoked_access_tokens "
            "WHERE jti = %s",
            (jti,),
        ).fetchone()
    assert row == (exp + settings.jwt_leeway_seconds,)
    # The cache entry lives as long: not until `exp` alone.
    assert r.ttl(denylist_key(jti)) > exp - time.time() + settings.jwt_leeway_seconds - 5


def test_a_token_revoked_inside_its_leeway_stays_refused_for_the_whole_leeway(
    settings: Settings, r: redis.Redis
) -> None:
    """A token just past `exp` still verifies for `jwt_leeway_seconds`. Revoking it must hold
    for all of that, not for the second or so left until `exp`."""
    issuer = AccessTokenIssuer(settings)
    ttl = settings.jwt_access_ttl_seconds
    assert settings.jwt_leeway_seconds >= 10

    async def scenario(components: Components) -> str:
        _, refresh, fresh = await _session(components)
        late = issuer.issue(fresh.user_id, now=int(time.time()) - ttl - 2)  # exp 2 s ago
        caller = components.verifier.verify_signature(late.token)  # inside the leeway
        await components.accounts.logout(caller, refresh)
        await asyncio.sleep(3)
        with pytest.raises(Unauthenticated, match="revoked"):
            await components.verifier.verify(late.token)
        r.delete(denylist_key(caller.jti))  # evicted
        with pytest.raises(Unauthenticated, match="revoked"):
            await components.verifier.verify(late.token)
        return caller.jti

    jti = _run(settings, scenario)
    assert r.get(denylist_key(jti)) == b"1"  # the miss was refilled from Postgres


def test_a_cached_not_revoked_answer_is_short_lived_and_logout_overrides_it(
    settings: Settings, r: redis.Redis
) -> None:
    async def scenario(components: Components) -> tuple[Any, int, Any]:
        token, refresh, caller = await _session(components)
        await components.verifier.verify(token)  # a miss: Postgres says no, cached as "0"
        cached, cached_ttl = r.get(denylist_key(caller.jti)), r.ttl(denylist_key(caller.jti))
        await components.accounts.logout(caller, refresh)
        with pytest.raises(Unauthenticated, match="revoked"):
            await components.verifier.verify(token)
        return cached, cached_ttl, r.get(denylist_key(caller.jti))

    cached, cached_ttl, after = _run(settings, scenario)
    assert cached == b"0"
    assert 0 < cached_ttl <= settings.revocation_cache_seconds
    assert after == b"1"


def test_without_redis_revocation_is_decided_by_postgres(settings: Settings) -> None:
    async def logout(components: Components) -> tuple[str, str]:
        token, refresh, caller = await _session(components)
        live, _, _ = await _session(components)
        await components.accounts.logout(caller, refresh)
        return token, live

    revoked, live = _run(settings, logout)
    down = settings.with_overrides(
        {"redis_url": "redis://127.0.0.1:1/0", "store_timeout_seconds": 0.5}
    )

    async def check(components: Components) -> bool:
        with pytest.raises(Unauthenticated, match="revoked"):
            await components.verifier.verify(revoked)
        return (await components.verifier.verify(live)).revocation_checked

    assert _run(down, check)


def test_with_redis_out_of_memory_logout_still_revokes(settings: Settings, r: redis.Redis) -> None:
    async def scenario(components: Components) -> str:
        token, refresh, caller = await _session(components)
        await components.verifier.verify(token)  # "0" cached before Redis filled up
        with _out_of_memory(r):
            await components.accounts.logout(caller, refresh)  # the "1" is refused: DEL instead
            assert r.get(denylist_key(caller.jti)) is None
            with pytest.raises(Unauthenticated, match="revoked"):
                await components.verifier.verify(token)
            with pytest.raises(Unauthenticated):
                await components.accounts.refresh(refresh)
        return caller.jti

    _run(settings, scenario)


def test_without_postgres_or_redis_the_check_refuses_rather_than_admits(
    settings: Settings, issue_token: Callable[[int], str]
) -> None:
    nothing = settings.with_overrides(
        {
            "redis_url": "redis://127.0.0.1:1/0",
            "database_url": "postgresql://nobody@127.0.0.1:1/none",
            "store_timeout_seconds": 0.5,
        }
    )
    token = issue_token(5)

    async def check(components: Components) -> None:
        with pytest.raises(Unavailable):
            await components.verifier.verify(token)

    _run(nothing, check)


def test_prune_removes_only_what_no_verifier_accepts(settings: Settings, database_url: str) -> None:
    stale, live = uuid.uuid4().hex, uuid.uuid4().hex
    margin = PRUNE_MARGIN_SECONDS
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO revoked_access_tokens (jti, user_id, expires_at) VALUES "
            "(%s, 1, now() - make_interval(secs => %s)), (%s, 1, now() - interval '1 second')",
            (stale, margin + 60, live),
        )

    async def prune(components: Components) -> tuple[int, int]:
        return await components.revocations.prune()

    pruned, _ = _run(settings, prune)
    assert pruned >= 1
    with psycopg.connect(database_url) as conn:
        left = {
            row[0]
            for row in conn.execute(
                "SELECT jti FROM revoked_access_tokens WHERE jti = ANY(%s)", ([stale, live],)
            )
        }
    assert left == {live}  # inside the margin: a verifier with a lagging clock still needs it


class _Users:
    """The gateway's dispatch straight into the real UserService deployment class (its RPC
    boundary included), in this process, on the same (broken) settings."""

    def __init__(self, components: Components) -> None:
        self._service: Any = UserServiceDeployment(components)

    async def call(
        self,
        method: MethodSpec,
        request: Message,
        caller: Caller | None,
        write_position: WritePosition | None,
    ) -> Message:
        reply: Message = await getattr(self._service, method.name)(
            request, caller=caller, write_position=write_position
        )
        return reply


def test_with_redis_down_and_the_limiter_failing_open_a_logged_out_token_is_refused(
    settings: Settings,
) -> None:
    """The known defect: the gateway admitted on fail-open and never read the denylist."""

    async def logout(components: Components) -> tuple[str, str, int]:
        token, refresh, caller = await _session(components)
        live, _, _ = await _session(components)
        await components.accounts.logout(caller, refresh)
        return token, live, caller.user_id

    revoked, live, user_id = _run(settings, logout)
    down = settings.with_overrides(
        {"redis_url": "redis://127.0.0.1:1/0", "store_timeout_seconds": 0.5}
    )
    assert down.rate_limit_fail_open
    components = Components(down)
    core = GatewayCore.assemble(components, _Users(components))

    async def endpoint(request: Request) -> Response:
        return await core.handle(request)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await components.close()  # on the loop that opened them

    app = Starlette(
        routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])], lifespan=lifespan
    )
    with TestClient(app) as client:
        refused = client.get(f"/v1/users/{user_id}", headers={"Authorization": f"Bearer {revoked}"})
        admitted = client.get(f"/v1/users/{user_id}", headers={"Authorization": f"Bearer {live}"})
    assert refused.status_code == 401, refused.text
    assert refused.json()["message"] == "access token has been revoked"
    assert admitted.status_code == 200, admitted.text  # the rate limit did fail open
