"""Load test through the HTTP gateway only, with DeathStarBench socialNetwork's request mix.

Each simulated user logs in once as one of the seeded accounts (`dmb seed`), then mostly reads
its home feed, reads other users' timelines, and sometimes posts, likes, comments and follows.
Beside DeathStarBench's routes, the mix has what an app built on this API also calls: profiles
of the authors it shows (8 in 132 requests), its notifications (6), people search as the user
types (4), its own account (2), a profile edit (1) and a mute undone at once (1, a mute that
lingers would change the home feeds the chaos run compares). Account deletion is left out: a
load test that deleted its seeded accounts would run out of users.
Requests are named by route so locust's report groups them. A 429 from the rate limiter is
expected behaviour under load: it is counted (as `rate_limited`) but not as a failure.

Environment: LOAD_USER_PREFIX (default "seed"), LOAD_USER_COUNT (1000), LOAD_PASSWORD
(default: the seed's default password), LOAD_THINK_SECONDS (pause between a user's requests,
uniform in [0, value]; default 0.05; benchmarks/e2e.py sets 0 to match the ceiling's users),
LOAD_SESSIONS: a JSON file of logged-in sessions ([{"username", "userId", "accessToken"}]) to
use instead of logging in (e2e.py logs in before the clock starts: an argon2id login costs more
CPU than hundreds of reads, and would be measured as part of the steady state), LOAD_MIX: `full`
(default, the mix above), `feed` (home-feed reads only) or `post` (authenticated
GETs of one post only: the cheapest full API request, what e2e.py sets against the 1-hop ceiling),
LOAD_SKIP: task names (comma-separated) to leave out of the full mix (benchmarks/chaos.py leaves
out `mute_and_unmute`), LOAD_RECORD: a file to which every acknowledged (2xx) write is
appended as one JSON line (`{"kind": "post"|"follow"|"like"|"comment", ...}`), for
benchmarks/chaos.py to check against Postgres; unset (the default), nothing is recorded and
nothing is slower.

    locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000 --headless -u 50 -r 10 -t 60s
"""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.exception import StopUser

USER_PREFIX = os.environ.get("LOAD_USER_PREFIX", "seed")
USER_COUNT = int(os.environ.get("LOAD_USER_COUNT", "1000"))
PASSWORD = os.environ.get("LOAD_PASSWORD", "seed-pass-123")
MIX = os.environ.get("LOAD_MIX", "full")
_SESSIONS_FILE = os.environ.get("LOAD_SESSIONS")
SESSIONS = itertools.cycle(json.loads(Path(_SESSIONS_FILE).read_text())) if _SESSIONS_FILE else None
RATE_LIMITED: dict[str, int] = {}
_RECORD_FILE = os.environ.get("LOAD_RECORD")
# Line-buffered: what a killed locust had acknowledged is on disk up to its last whole line.
RECORD = open(_RECORD_FILE, "a", buffering=1) if _RECORD_FILE else None  # noqa: SIM115


def _acknowledged(kind: str, **fields: str) -> None:
    """One acknowledged write, for the chaos run's check (only when LOAD_RECORD is set)."""
    if RECORD is not None:
        RECORD.write(json.dumps({"kind": kind, **fields}) + "\n")


def _count_rate_limited(name: str) -> None:
    RATE_LIMITED[name] = RATE_LIMITED.get(name, 0) + 1


def _report_rate_limited(environment: Any, **_: Any) -> None:
    total = sum(RATE_LIMITED.values())
    if total:
        print(f"rate_limited (429, not failures): {total} {dict(sorted(RATE_LIMITED.items()))}")


events.quitting.add_listener(_report_rate_limited)  # type: ignore[no-untyped-call]  # locust: untyped


class SocialUser(FastHttpUser):
    """One person using the app: login once, then the DeathStarBench-like mix."""

    wait_time = between(0.0, float(os.environ.get("LOAD_THINK_SECONDS", "0.05")))

    def on_start(self) -> None:
        body = next(SESSIONS) if SESSIONS else self._login()
        self.username = body["username"]
        self.user_id = body["userId"]
        self.headers = {"Authorization": f"Bearer {body['accessToken']}"}
        self.known_posts: list[str] = []
        self.known_users: list[str] = [self.user_id]
        if MIX == "post":  # posts to read: the home feed's, else one of our own
            self.read_home_feed()
            if not self.known_posts:
                self.compose_post()

    def _login(self) -> dict[str, Any]:
        username = f"{USER_PREFIX}{random.randrange(USER_COUNT)}"
        with self.client.post(
            "/v1/auth/login",
            json={"username": username, "password": PASSWORD},
            name="POST /v1/auth/login",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"login failed: {response.status_code} {response.text[:200]}")
                raise StopUser()
            body: dict[str, Any] = response.json()
        return body | {"username": username}

    def _call(self, method: str, path: str, name: str, **kwargs: Any) -> Any:
        with self.client.request(
            method, path, name=name, headers=self.headers, catch_response=True, **kwargs
        ) as response:
            if response.status_code == 429:
                _count_rate_limited(name)
                response.success()
                return None
            if response.status_code >= 400:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return None
            return response.json() if response.text else {}

    def _remember(self, posts: list[dict[str, Any]]) -> None:
        for post in posts[:5]:
            self.known_posts.append(post["id"])
            self.known_users.append(post["authorId"])
        del self.known_posts[:-50]
        del self.known_users[:-50]

    @task(60)
    def read_home_feed(self) -> None:
        body = self._call("GET", "/v1/feed?pageSize=20", "GET /v1/feed")
        if body:
            self._remember(body.get("posts", []))

    @task(30)
    def read_user_timeline(self) -> None:
        author = random.choice(self.known_users)
        body = self._call(
            "GET", f"/v1/users/{author}/posts?pageSize=20", "GET /v1/users/{user_id}/posts"
        )
        if body:
            self._remember(body.get("posts", []))

    @task(10)
    def compose_post(self) -> None:
        content = f"load test post {random.randrange(10**9)} from {self.username}"
        body = self._call("POST", "/v1/posts", "POST /v1/posts", json={"content": content})
        if body and "post" in body:
            self.known_posts.append(body["post"]["id"])
            _acknowledged("post", id=body["post"]["id"], author=self.user_id)

    @task(5)
    def like_post(self) -> None:
        if self.known_posts:
            post = random.choice(self.known_posts)
            body = self._call("POST", f"/v1/posts/{post}/likes", "POST /v1/posts/{post_id}/likes")
            if body is not None:
                _acknowledged("like", post=post, user=self.user_id)

    @task(3)
    def comment(self) -> None:
        if self.known_posts:
            post = random.choice(self.known_posts)
            body = self._call(
                "POST",
                f"/v1/posts/{post}/comments",
                "POST /v1/posts/{post_id}/comments",
                json={"content": "nice one"},
            )
            if body and "comment" in body:
                _acknowledged("comment", id=body["comment"]["id"], post=post)

    @task(2)
    def follow(self) -> None:
        other = random.choice(self.known_users)
        if other != self.user_id:
            body = self._call(
                "POST", f"/v1/users/{other}/follow", "POST /v1/users/{user_id}/follow"
            )
            if body is not None:
                _acknowledged("follow", follower=self.user_id, followee=other)

    @task(8)
    def view_profile(self) -> None:
        user = random.choice(self.known_users)
        self._call("GET", f"/v1/users/{user}", "GET /v1/users/{user_id}")

    @task(4)
    def search_people(self) -> None:
        typed = f"{USER_PREFIX}{random.randrange(100)}"[: random.randint(2, len(USER_PREFIX) + 2)]
        self._call("GET", f"/v1/users:search?q={typed}&pageSize=20", "GET /v1/users:search")

    @task(6)
    def read_notifications(self) -> None:
        self._call("GET", "/v1/notifications?pageSize=20", "GET /v1/notifications")

    @task(2)
    def read_own_account(self) -> None:
        self._call("GET", "/v1/users/me", "GET /v1/users/me")

    @task(1)
    def edit_profile(self) -> None:
        profile = {"displayName": f"{self.username} {random.randrange(100)}", "bio": "load test"}
        self._call(
            "PATCH",
            "/v1/users/me",
            "PATCH /v1/users/me",
            json={"profile": profile, "updateMask": "displayName,bio"},
        )

    @task(1)
    def mute_and_unmute(self) -> None:
        other = random.choice(self.known_users)
        if other != self.user_id:
            self._call("POST", f"/v1/users/{other}/mute", "POST /v1/users/{user_id}/mute")
            self._call("DELETE", f"/v1/users/{other}/mute", "DELETE /v1/users/{user_id}/mute")

    def read_post(self) -> None:
        post = random.choice(self.known_posts)
        self._call("GET", f"/v1/posts/{post}", "GET /v1/posts/{post_id}")


_SINGLE_ROUTE = {"feed": SocialUser.read_home_feed, "post": SocialUser.read_post}
_SKIPPED = {name for name in os.environ.get("LOAD_SKIP", "").split(",") if name}
if _SKIPPED:
    SocialUser.tasks = [t for t in SocialUser.tasks if getattr(t, "__name__", "") not in _SKIPPED]
if MIX != "full":
    if MIX not in _SINGLE_ROUTE:
        raise SystemExit(f"LOAD_MIX must be full, feed or post, not {MIX!r}")
    SocialUser.tasks = [_SINGLE_ROUTE[MIX]]
