"""The gateway end to end over HTTP: the real Serve deployment in front of the real services.

Tests that need a domain app skip while its module does not exist; the gateway's own behaviour
(routing errors, transcoding errors, auth, buckets, health, OpenAPI) is tested with tokens
minted directly, so it needs none of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import requests

from dmb.settings import Settings
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import register_and_login

PASSWORD = "gateway password"


def _needs(*apps: str) -> None:
    for app in apps:
        pytest.importorskip(f"serve_apps.{app}", reason=f"the {app} app is not written yet")


@pytest.fixture(scope="module")
def base(serve_system: LocalSystem) -> str:
    return str(serve_system.addresses()["http"])


def _register_and_login(base: str) -> dict[str, Any]:
    return register_and_login(base, f"g_{uuid.uuid4().hex[:12]}", PASSWORD)


def test_full_flow_register_login_post_like_comment(base: str) -> None:
    _needs("users", "posts", "follows")
    alice = _register_and_login(base)
    bob = _register_and_login(base)
    post = requests.post(
        f"{base}/v1/posts",
        json={"content": "  hi from http  "},
        headers=alice["headers"],
        timeout=30,
    )
    assert post.status_code == 200, post.text
    created = post.json()["post"]
    assert created["content"] == "hi from http"
    assert created["authorId"] == alice["userId"]  # int64 as a JSON string
    assert isinstance(created["id"], str)
    assert created["likeCount"] == "0"  # defaults are printed
    like = requests.post(
        f"{base}/v1/posts/{created['id']}/likes", headers=bob["headers"], timeout=30
    )
    assert like.json() == {"likeCount": "1"}
    comment = requests.post(
        f"{base}/v1/posts/{created['id']}/comments",
        json={"content": "nice"},
        headers=bob["headers"],
        timeout=30,
    )
    assert comment.status_code == 200, comment.text
    got = requests.get(f"{base}/v1/posts/{created['id']}", headers=bob["headers"], timeout=30)
    assert got.json()["post"]["commentCount"] == "1"
    follow = requests.post(  # `curl -d '{}'`: a bodiless route ignores the body
        f"{base}/v1/users/{alice['userId']}/follow", json={}, headers=bob["headers"], timeout=30
    )
    assert follow.status_code == 200, follow.text
    stats = requests.get(
        f"{base}/v1/users/{alice['userId']}/stats", headers=bob["headers"], timeout=30
    )
    assert stats.json() == {"followerCount": "1", "followingCount": "0", "isCelebrity": False}
    listed = requests.get(
        f"{base}/v1/users/{alice['userId']}/posts",
        params={"pageSize": "1"},
        headers=bob["headers"],
        timeout=30,
    )
    assert [p["id"] for p in listed.json()["posts"]] == [created["id"]]
    denied = requests.delete(f"{base}/v1/posts/{created['id']}", headers=bob["headers"], timeout=30)
    assert denied.status_code == 403
    assert denied.json()["code"] == 7


def test_gateway_errors_follow_the_contract(base: str, issue_token: Callable[[int], str]) -> None:
    """Everything the gateway answers itself, before any service is called."""
    token = {"Authorization": f"Bearer {issue_token(424242)}"}
    missing = requests.get(f"{base}/v1/nothing", timeout=30)
    assert missing.status_code == 404
    assert missing.json() == {"code": 5, "message": "no route for GET /v1/nothing", "details": []}
    assert "RateLimit-Limit" in missing.headers
    wrong_verb = requests.put(f"{base}/v1/posts", headers=token, timeout=30)
    assert wrong_verb.status_code == 405
    assert "POST" in wrong_verb.headers["Allow"]
    malformed = requests.post(f"{base}/v1/posts", data=b"{not json", headers=token, timeout=30)
    assert malformed.status_code == 400
    assert malformed.json()["code"] == 3
    unknown = requests.post(
        f"{base}/v1/posts", json={"content": "x", "colour": "red"}, headers=token, timeout=30
    )
    assert unknown.status_code == 400
    assert "colour" in unknown.json()["message"]
    wrong_type = requests.get(
        f"{base}/v1/users/1/posts", params={"pageSize": "many"}, headers=token, timeout=30
    )
    assert wrong_type.status_code == 400
    assert "page_size" in wrong_type.json()["message"]
    body_type = requests.post(f"{base}/v1/posts", json={"content": 5}, headers=token, timeout=30)
    assert body_type.status_code == 400
    assert "content" in body_type.json()["message"]
    huge = requests.post(
        f"{base}/v1/posts", json={"content": "x" * 2_000_000}, headers=token, timeout=30
    )
    assert huge.status_code == 413
    no_token = requests.post(f"{base}/v1/posts", json={"content": "x"}, timeout=30)
    assert no_token.status_code == 401
    assert no_token.headers["WWW-Authenticate"].startswith("Bearer")


def test_request_ids_reach_the_response_once(base: str) -> None:
    given = requests.get(f"{base}/healthz", headers={"X-Request-Id": "trace-me-42"}, timeout=30)
    assert given.headers["X-Request-Id"] == "trace-me-42"
    made = requests.get(f"{base}/healthz", timeout=30)
    assert made.headers["X-Request-Id"]
    assert "," not in made.headers["X-Request-Id"]  # one header, not Serve's and ours


def _statuses_until_429(
    url: str, headers: dict[str, str], settings: Settings, params: dict[str, str] | None = None
) -> list[int]:
    """GET `url` until the user's bucket refuses (a 429 with Retry-After, nothing remaining
    and code RESOURCE_EXHAUSTED); the statuses seen, the 429s last.

    The requests go out in concurrent rounds: one at a time, a request slower than the
    refill interval (100 ms at 10 tokens/s, easily reached on a loaded 2-core machine) gives
    back its token before the next one asks, and the bucket never empties."""
    parallel = 25
    rounds = 2 * (settings.rate_limit_user_capacity // parallel + 1)

    def get(_: int) -> requests.Response:
        return requests.get(url, params=params, headers=headers, timeout=30)

    statuses: list[int] = []
    with ThreadPoolExecutor(parallel) as pool:
        for _ in range(rounds):
            responses = list(pool.map(get, range(parallel)))
            refused = [response for response in responses if response.status_code == 429]
            statuses += [r.status_code for r in responses if r.status_code != 429]
            if refused:
                for response in refused:
                    assert int(response.headers["Retry-After"]) >= 1
                    assert response.headers["RateLimit-Remaining"] == "0"
                    assert response.json()["code"] == 8
                return statuses + [429] * len(refused)
    raise AssertionError(f"no 429 after {len(statuses)} requests: {sorted(set(statuses))}")


def test_the_user_bucket_answers_429_with_retry_after(
    base: str, settings: Settings, issue_token: Callable[[int], str]
) -> None:
    """Refused-by-the-gateway requests (unknown query field: 400) still spend the user's tokens."""
    token = {"Authorization": f"Bearer {issue_token(uuid.uuid4().int % 10**12)}"}
    statuses = _statuses_until_429(
        f"{base}/v1/users/1/stats", token, settings, params={"bogus": "1"}
    )
    answered = [status for status in statuses if status != 429]
    assert set(answered) == {400}
    assert len(answered) >= settings.rate_limit_user_capacity  # plus what refilled meanwhile


def test_errors_from_services_follow_the_contract(base: str) -> None:
    _needs("users", "posts")
    me = _register_and_login(base)
    empty = requests.post(
        f"{base}/v1/posts", json={"content": ""}, headers=me["headers"], timeout=30
    )
    assert empty.status_code == 400
    assert empty.json() == {
        "code": 3,
        "message": "invalid request: content: value is required",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {"field": "content", "description": "value is required", "reason": "required"}
                ],
            }
        ],
    }
    missing = requests.get(f"{base}/v1/posts/1", headers=me["headers"], timeout=30)
    assert missing.status_code == 404
    duplicate = requests.post(
        f"{base}/v1/users",
        json={"username": "dup_" + me["userId"], "email": "x@example.com", "password": "12345678"},
        timeout=30,
    )
    assert duplicate.status_code in (200, 409)
    again = requests.post(
        f"{base}/v1/users",
        json={"username": "dup_" + me["userId"], "email": "y@example.com", "password": "12345678"},
        timeout=30,
    )
    assert again.status_code == 409


def test_auth_is_required_and_logout_revokes(base: str) -> None:
    _needs("users")
    no_token = requests.get(f"{base}/v1/feed", timeout=30)
    assert no_token.status_code == 401
    assert no_token.headers["WWW-Authenticate"].startswith("Bearer")
    forged = requests.get(
        f"{base}/v1/posts/1", headers={"Authorization": "Bearer a.b.c"}, timeout=30
    )
    assert forged.status_code == 401
    me = _register_and_login(base)
    out = requests.post(
        f"{base}/v1/auth/logout",
        json={"refreshToken": me["refreshToken"]},
        headers=me["headers"],
        timeout=30,
    )
    assert out.status_code == 200, out.text
    after = requests.get(f"{base}/v1/users/{me['userId']}", headers=me["headers"], timeout=30)
    assert after.status_code == 401
    assert "revoked" in after.json()["message"]
    refreshed = requests.post(
        f"{base}/v1/auth/refresh", json={"refreshToken": me["refreshToken"]}, timeout=30
    )
    assert refreshed.status_code == 401


def test_rate_limit_headers_and_healthz_and_openapi(base: str, settings: Settings) -> None:
    _needs("users")
    me = _register_and_login(base)
    response = requests.get(f"{base}/v1/users/{me['userId']}", headers=me["headers"], timeout=30)
    assert int(response.headers["RateLimit-Limit"]) == settings.rate_limit_user_capacity
    assert int(response.headers["RateLimit-Remaining"]) < settings.rate_limit_user_capacity
    assert "RateLimit-Reset" in response.headers
    assert response.headers["X-Request-Id"]
    health = requests.get(f"{base}/healthz", timeout=30)
    assert health.status_code == 200, health.text
    assert {"redis", "postgres", "kafka"} <= set(health.json()["dependencies"])
    document = requests.get(f"{base}/openapi.json", timeout=30).json()
    assert document["openapi"].startswith("3.")
    assert "post" in document["paths"]["/v1/posts"]
    assert "/v1/posts/{post_id}/comments/{comment_id}" in document["paths"]
    assert "security" not in document["paths"]["/v1/auth/login"]["post"]
    assert document["paths"]["/v1/feed"]["get"]["security"] == [{"bearerAuth": []}]


def test_user_bucket_rejects_with_429_and_retry_after(base: str, settings: Settings) -> None:
    _needs("users", "follows")
    me = _register_and_login(base)
    statuses = _statuses_until_429(f"{base}/v1/users/{me['userId']}/stats", me["headers"], settings)
    assert {code for code in statuses if code != 429} == {200}


def test_preflights_reach_the_gateway_through_serve_and_no_origin_is_allowed_by_default(
    base: str,
) -> None:
    """The local system sets no DMB_CORS_ALLOWED_ORIGINS: a browser page elsewhere gets nothing."""
    preflight = requests.options(
        f"{base}/v1/posts",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert preflight.status_code == 403, preflight.text  # answered by the gateway, not a 405
    assert preflight.json()["code"] == 7
    assert "Access-Control-Allow-Origin" not in preflight.headers


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _logout(base: str, session: dict[str, Any]) -> None:
    out = requests.post(
        f"{base}/v1/auth/logout",
        json={"refreshToken": session["refreshToken"]},
        headers=session["headers"],
        timeout=30,
    )
    assert out.status_code == 200, out.text


def _refresh(base: str, session: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{base}/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}, timeout=30
    )


def test_after_flushall_logged_out_tokens_stay_refused(base: str, r: redis.Redis) -> None:
    """Issue 12 item 6: revocation must not live only in a cache that can be flushed."""
    _needs("users")
    gone, staying = _register_and_login(base), _register_and_login(base)
    _logout(base, gone)
    r.flushall()
    refused = requests.get(f"{base}/v1/users/{gone['userId']}", headers=gone["headers"], timeout=30)
    assert refused.status_code == 401, refused.text
    assert refused.json()["message"] == "access token has been revoked"
    assert _refresh(base, gone).status_code == 401
    me = requests.get(
        f"{base}/v1/users/{staying['userId']}", headers=staying["headers"], timeout=30
    )
    assert me.status_code == 200, me.text
    assert _refresh(base, staying).status_code == 200


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


def test_with_redis_out_of_memory_limits_fail_open_logout_holds_and_writes_get_503(
    base: str, r: redis.Redis
) -> None:
    """Issue 12 item 9: the rate limit may fail open, the logout check may not; a request that
    needs a Redis write (rebuilding a feed) is 503 saying why, never 500, and a write already
    committed in Postgres is not answered 503."""
    _needs("users", "posts", "feed")
    gone, me, later = (_register_and_login(base) for _ in range(3))
    post = requests.post(
        f"{base}/v1/posts", json={"content": "x"}, headers=me["headers"], timeout=30
    )
    assert post.status_code == 200, post.text
    post_id = post.json()["post"]["id"]
    _logout(base, gone)
    with _out_of_memory(r):
        refused = requests.get(
            f"{base}/v1/users/{gone['userId']}", headers=gone["headers"], timeout=30
        )
        assert refused.status_code == 401, refused.text
        assert refused.json()["message"] == "access token has been revoked"
        read = requests.get(f"{base}/v1/users/{me['userId']}", headers=me["headers"], timeout=30)
        assert read.status_code == 200, read.text  # the rate limiter failed open
        feed = requests.get(f"{base}/v1/feed", headers=me["headers"], timeout=30)  # a rebuild
        assert feed.status_code == 503, feed.text
        assert feed.json()["code"] == 14
        assert "Redis is refusing writes (out of memory" in feed.json()["message"]
        # Committed in Postgres before Redis refused the counter: answered from the rows.
        like = requests.post(f"{base}/v1/posts/{post_id}/likes", headers=me["headers"], timeout=30)
        assert like.status_code == 200, like.text
        assert like.json() == {"likeCount": "1"}
        _logout(base, later)  # durable in Postgres although Redis refuses the cache entry
        after = requests.get(
            f"{base}/v1/users/{later['userId']}", headers=later["headers"], timeout=30
        )
        assert after.status_code == 401, after.text
    assert requests.get(f"{base}/v1/feed", headers=me["headers"], timeout=30).status_code == 200
    got = requests.get(f"{base}/v1/posts/{post_id}", headers=me["headers"], timeout=30)
    assert got.json()["post"]["likeCount"] == "1"  # the cached hash did not miss the like
