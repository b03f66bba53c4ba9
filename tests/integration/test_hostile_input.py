"""Hostile input against the running system, over HTTP and over gRPC (issue 12, item 10).

Each case must get a clear 400 / INVALID_ARGUMENT (never a 500), write nothing, and leave no
traceback in the logs of the gateway or the service that refused it: a traceback means a bug,
and an attacker who can print them at will can also fill the disks.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import requests
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dmb.v1 import feed_pb2, feed_pb2_grpc, posts_pb2, posts_pb2_grpc, users_pb2, users_pb2_grpc
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import grpc_metadata, make_users

SUPERSCRIPT_CURSOR = base64.urlsafe_b64encode("v1:²".encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def base(serve_system: LocalSystem) -> str:
    return str(serve_system.addresses()["http"])


@pytest.fixture(scope="module")
def serve_logs(serve_system: LocalSystem) -> Path:
    import ray

    # Where this session's Ray writes the Serve replicas' logs (no public API names the folder).
    node = ray._private.worker.global_worker.node
    assert node is not None
    session = Path(node.get_session_dir_path())
    return session / "logs" / "serve"


def _traceback_lines(logs: Path, request_id: str) -> list[str]:
    """Lines about `request_id` (and the traceback line Serve writes right after one) that
    carry a traceback or an ERROR; empty when the request was refused quietly."""
    found = []
    for path in logs.glob("*.log"):
        lines = path.read_text(errors="replace").splitlines()
        for index, line in enumerate(lines):
            if request_id not in line:
                continue
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if " ERROR " in line or "Traceback" in line or following.startswith("('Traceback"):
                found.append(f"{path.name}: {line[:300]}")
    return found


@pytest.fixture
def author(database_url: str, issue_token: Callable[[int], str]) -> tuple[int, dict[str, str]]:
    (user_id,) = make_users(database_url, 1)
    return user_id, {"Authorization": f"Bearer {issue_token(user_id)}"}


def _count(database_url: str, sql: str, *args: Any) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(sql, args).fetchone()
    assert row is not None
    return int(row[0])


def _refused(response: requests.Response, *said: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 3
    for text in said:
        assert text in body["message"], body["message"]


def _quiet(logs: Path, response: requests.Response) -> None:
    time.sleep(0.5)  # replica log lines reach the file a moment after the reply
    assert _traceback_lines(logs, response.headers["X-Request-Id"]) == []


HOSTILE_BODIES = {
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "nested inside a field": b'{"content": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    "a 4,400-digit integer": b'{"content": ' + b"9" * 4_400 + b"}",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BODIES))
def test_hostile_json_bodies_get_400_and_write_nothing(
    base: str,
    author: tuple[int, dict[str, str]],
    database_url: str,
    serve_logs: Path,
    case: str,
) -> None:
    user_id, headers = author
    before = _count(database_url, "SELECT count(*) FROM posts WHERE author_id = %s", user_id)
    response = requests.post(
        f"{base}/v1/posts", data=HOSTILE_BODIES[case], headers=headers, timeout=60
    )
    _refused(response)
    assert len(response.json()["message"]) <= 300
    assert (
        _count(database_url, "SELECT count(*) FROM posts WHERE author_id = %s", user_id) == before
    )
    _quiet(serve_logs, response)


def test_nul_in_a_login_username_is_a_400(base: str, serve_logs: Path) -> None:
    response = requests.post(
        f"{base}/v1/auth/login", json={"username": "ad\u0000a", "password": "whatever1"}, timeout=30
    )
    _refused(response, "username")
    assert response.json()["details"][0]["fieldViolations"][0]["field"] == "username"
    _quiet(serve_logs, response)


def test_nul_in_a_register_email_is_a_400_and_no_account(
    base: str, database_url: str, serve_logs: Path
) -> None:
    name = f"h_{uuid.uuid4().hex[:12]}"
    response = requests.post(
        f"{base}/v1/users",
        json={"username": name, "email": f"{name}\u0000@example.com", "password": "long enough"},
        timeout=30,
    )
    _refused(response, "email")
    assert _count(database_url, "SELECT count(*) FROM users WHERE username = %s", name) == 0
    _quiet(serve_logs, response)


@pytest.mark.parametrize("path", ["/v1/posts", "/v1/posts/{post}/comments"])
def test_nul_in_content_is_a_400_and_nothing_is_written(
    base: str,
    author: tuple[int, dict[str, str]],
    database_url: str,
    serve_logs: Path,
    path: str,
) -> None:
    user_id, headers = author
    post = requests.post(f"{base}/v1/posts", json={"content": "host"}, headers=headers, timeout=30)
    assert post.status_code == 200, post.text
    post_id = post.json()["post"]["id"]
    counts = (
        "SELECT (SELECT count(*) FROM posts WHERE author_id = %s) + "
        "(SELECT count(*) FROM comments WHERE author_id = %s)"
    )
    before = _count(database_url, counts, user_id, user_id)
    response = requests.post(
        base + path.format(post=post_id),
        json={"content": "hello\u0000world"},
        headers=headers,
        timeout=30,
    )
    _refused(response, "content")
    assert _count(database_url, counts, user_id, user_id) == before
    _quiet(serve_logs, response)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/feed",
        "/v1/users/{user}/followers",
        "/v1/users/{user}/following",
        "/v1/users/{user}/posts",
    ],
)
def test_a_cursor_of_base64_v1_superscript_two_is_a_400(
    base: str, author: tuple[int, dict[str, str]], serve_logs: Path, path: str
) -> None:
    user_id, headers = author
    response = requests.get(
        base + path.format(user=user_id),
        params={"cursor": SUPERSCRIPT_CURSOR},
        headers=headers,
        timeout=30,
    )
    _refused(response, "cursor")
    _quiet(serve_logs, response)


def test_the_refusals_name_no_store_host_or_user(
    base: str, author: tuple[int, dict[str, str]], settings: Any
) -> None:
    """Whatever a hostile request gets back, no store address or account is in it."""
    _, headers = author
    replies = [
        requests.post(f"{base}/v1/posts", data=body, headers=headers, timeout=60).text
        for body in HOSTILE_BODIES.values()
    ]
    replies.append(
        requests.get(
            f"{base}/v1/feed", params={"cursor": SUPERSCRIPT_CURSOR}, headers=headers, timeout=30
        ).text
    )
    secrets = [
        settings.database_url.get_secret_value(),
        settings.redis_url.get_secret_value(),
        str(settings.kafka_bootstrap),
    ]
    for reply in replies:
        for secret in secrets:
            assert secret not in reply
        assert "psycopg" not in reply
        assert "Traceback" not in reply


def _violations(error: grpc.RpcError) -> list[str]:
    """The field paths of the google.rpc.BadRequest in the status details."""
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        fields += [violation.field for violation in bad_request.field_violations]
    return fields


def test_hostile_grpc_requests_get_invalid_argument_with_field_violations(
    grpc_channel: grpc.Channel, database_url: str, issue_token: Callable[[int], str]
) -> None:
    (user_id,) = make_users(database_url, 1)
    token = issue_token(user_id)
    users = users_pb2_grpc.UserServiceStub(grpc_channel)
    posts = posts_pb2_grpc.PostServiceStub(grpc_channel)
    name = f"g_{uuid.uuid4().hex[:12]}"
    calls: list[tuple[Callable[[], Any], list[str]]] = [
        (
            lambda: users.Login(
                users_pb2.LoginRequest(username="a\u0000b", password="x"),
                metadata=grpc_metadata("users"),
            ),
            ["username"],
        ),
        (
            lambda: users.Register(
                users_pb2.RegisterRequest(
                    username=name, email="x\u0000@example.com", password="long enough"
                ),
                metadata=grpc_metadata("users"),
            ),
            ["email"],
        ),
        (
            lambda: posts.CreatePost(
                posts_pb2.CreatePostRequest(content="a\u0000"),
                metadata=grpc_metadata("posts", token),
            ),
            ["content"],
        ),
        (
            lambda: posts.GetPost(
                posts_pb2.GetPostRequest(post_id=0), metadata=grpc_metadata("posts", token)
            ),
            ["post_id"],
        ),
        (
            lambda: posts.ListUserPosts(
                posts_pb2.ListUserPostsRequest(user_id=user_id, page_size=101),
                metadata=grpc_metadata("posts", token),
            ),
            ["page_size"],
        ),
    ]
    for call, fields in calls:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _violations(refused.value) == fields
    feed = feed_pb2_grpc.FeedServiceStub(grpc_channel)
    with pytest.raises(grpc.RpcError) as cursor:
        feed.GetHomeFeed(
            feed_pb2.GetHomeFeedRequest(cursor=SUPERSCRIPT_CURSOR),
            metadata=grpc_metadata("feed", token),
        )
    assert cursor.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cursor" in (cursor.value.details() or "")
    assert _count(database_url, "SELECT count(*) FROM users WHERE username = %s", name) == 0
    assert _count(database_url, "SELECT count(*) FROM posts WHERE author_id = %s", user_id) == 0
