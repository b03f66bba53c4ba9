"""Small helpers for integration tests: accounts made straight in Postgres, callers for handles."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import requests

from dmb.domain.identity import Caller

T = TypeVar("T")


def haproxy_configs(folder: Path) -> list[str]:
    """The haproxy.cfg Ray rendered for each node under a system's HAProxy folder
    (entrypoints.launcher.ingress_folder; Ray adds a folder per node below it)."""
    return [path.read_text() for path in folder.glob("*/haproxy.cfg")]


def eventually(
    check: Callable[[], T | None], what: str, timeout: float = 60, every: float = 0.2
) -> T:
    """Poll `check` until it returns something truthy, and return that; fail after `timeout`
    seconds naming `what` (the pipeline is asynchronous: tests wait for its effects)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached in {timeout}s: {what}")
        time.sleep(every)


def make_users(database_url: str, count: int) -> list[int]:
    """Create `count` accounts directly (no password hashing cost); return their ids in order."""
    names = [f"t_{uuid.uuid4().hex[:20]}" for _ in range(count)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO users (username, email, password_hash) "
            "SELECT n, n || '@example.com', 'x' FROM unnest(%s::text[]) WITH ORDINALITY AS t(n, i) "
            "ORDER BY i RETURNING id",
            (names,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def follow_in_bulk(database_url: str, followers: list[int], followee: int) -> None:
    """Many follows in one statement (through CDC like any other): faster than one call each."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO follows (follower_id, followee_id) "
            "SELECT f, %s FROM unnest(%s::bigint[]) AS f",
            (followee, followers),
        )


def make_celebrity(database_url: str, threshold: int, star: int) -> None:
    """Enough new fans for `star` to be a celebrity (its posts are then read at request time)."""
    follow_in_bulk(database_url, make_users(database_url, threshold), star)


def as_caller(user_id: int) -> Caller:
    return Caller(user_id=user_id, jti=uuid.uuid4().hex, expires_at=2**31)


def walk_pages(
    fetch: Callable[[str], Any], after_first: Callable[[], object] | None = None
) -> list[int]:
    """Every post id of a cursor-paged listing, in order: `fetch(cursor)` returns one page (with
    `posts` and `next_cursor`); `after_first` runs once the first page is in (to write while
    paging, which must not change what the walk sees)."""
    seen: list[int] = []
    cursor = ""
    while True:
        page = fetch(cursor)
        seen += [post.id for post in page.posts]
        if after_first is not None and cursor == "":
            after_first()
        if not page.next_cursor:
            return seen
        cursor = page.next_cursor


def grpc_metadata(app: str, token: str | None = None) -> tuple[tuple[str, str], ...]:
    """Metadata for a call through the gRPC ingress: the app to route to, and the bearer token."""
    routing = (("application", app),)
    return (*routing, ("authorization", f"Bearer {token}")) if token else routing


def register_and_login(base: str, name: str, password: str) -> dict[str, Any]:
    """Register `name` over HTTP and log in: the login reply plus the bearer `headers`."""
    created = requests.post(
        f"{base}/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": password},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    return log_in(base, name, password)


def log_in(base: str, name: str, password: str) -> dict[str, Any]:
    """Log in over HTTP (one more session of an existing account): the login reply plus the
    bearer `headers`."""
    login = requests.post(
        f"{base}/v1/auth/login", json={"username": name, "password": password}, timeout=30
    )
    assert login.status_code == 200, login.text
    body: dict[str, Any] = login.json()
    body["headers"] = {"Authorization": f"Bearer {body['accessToken']}"}
    return body
