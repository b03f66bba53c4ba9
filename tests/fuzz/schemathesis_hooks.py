"""Schemathesis hooks for fuzzing a running dmb with every check: a fresh bearer token per case.

One fuzzed `POST /v1/auth/logout` revokes the token it was sent with, so a token shared by the
whole run would turn every later case into a 401. Each case therefore logs in (as
`FUZZ_USERNAME`, registered on first use) against `FUZZ_BASE_URL`; logins are anonymous and
charge only the client's IP bucket. Load with `SCHEMATHESIS_HOOKS=tests.fuzz.schemathesis_hooks`
(the README has the whole command).
"""

from __future__ import annotations

import os
from typing import Any

import requests
import schemathesis

_PASSWORD_DEFAULT = "fuzz-password-1"


def _login(base: str, username: str, password: str) -> str:
    credentials = {"username": username, "password": password}
    login = requests.post(f"{base}/v1/auth/login", json=credentials, timeout=30)
    if login.status_code == 401:  # first use: make the account, then log in
        registered = requests.post(
            f"{base}/v1/users",
            json={**credentials, "email": f"{username}@example.com"},
            timeout=30,
        )
        registered.raise_for_status()
        login = requests.post(f"{base}/v1/auth/login", json=credentials, timeout=30)
    login.raise_for_status()
    token: str = login.json()["accessToken"]
    _OWN_ID.add(str(login.json()["userId"]))
    return token


_OWN_ID: set[str] = set()  # the fuzzing account's id, once known


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """Leave out following, blocking or muting yourself (or undoing it): the document cannot say
    that `user_id` must not be the caller (400 "you cannot follow yourself" is right), and the
    caller's own id is in the replies of GET and PATCH /v1/users/me, which the fuzzer reuses."""
    if not case.path.endswith(("/follow", "/block", "/mute")):
        return True
    return str((case.path_parameters or {}).get("user_id")) not in _OWN_ID


@schemathesis.auth(refresh_interval=None)
class FreshLogin:
    """A token of its own for every case (refresh_interval=None: no caching)."""

    def get(self, case: Any, ctx: Any) -> str:
        return _login(
            os.environ["FUZZ_BASE_URL"].rstrip("/"),
            os.environ.get("FUZZ_USERNAME", "fuzzer"),
            os.environ.get("FUZZ_PASSWORD", _PASSWORD_DEFAULT),
        )

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
