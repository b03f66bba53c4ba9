"""Finding people over HTTP: GET /v1/users:search by username or display-name prefix."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from entrypoints.launcher import LocalSystem
from tests.integration.helpers import register_and_login

PASSWORD = "search password"


@pytest.fixture(scope="module")
def base(serve_system: LocalSystem) -> str:
    return str(serve_system.addresses()["http"])


def _account(base: str, name: str, display_name: str = "") -> dict[str, Any]:
    body = register_and_login(base, name, PASSWORD)
    if display_name:
        patched = requests.patch(
            f"{base}/v1/users/me",
            json={"profile": {"displayName": display_name}, "updateMask": "displayName"},
            headers=body["headers"],
            timeout=30,
        )
        assert patched.status_code == 200, patched.text
    return body


def _search(base: str, who: dict[str, Any], **params: Any) -> requests.Response:
    return requests.get(
        f"{base}/v1/users:search", params=params, headers=who["headers"], timeout=30
    )


def test_prefix_search_pages_in_username_order(base: str) -> None:
    tag = f"s{uuid.uuid4().hex[:8]}"
    names = [f"{tag}_ada", f"{tag}_adam", f"{tag}_bob", f"{tag}", f"{tag}_zoe"]
    accounts = [_account(base, name) for name in names]
    seen: list[str] = []
    cursor = ""
    while True:
        page = _search(base, accounts[0], q=tag, pageSize=2, cursor=cursor)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [user["username"] for user in body["users"]]
        assert all(user.get("email", "") == "" for user in body["users"])  # never others' emails
        cursor = body.get("nextCursor", "")
        if not cursor:
            break
    assert seen == sorted(names)  # the exact username first, no repeats, nothing skipped
    narrowed = _search(base, accounts[0], q=f"{tag}_ADA").json()["users"]
    assert [user["username"] for user in narrowed] == [f"{tag}_ada", f"{tag}_adam"]


def test_display_names_are_found_case_insensitively(base: str) -> None:
    tag = uuid.uuid4().hex[:8]
    alice = _account(base, f"a{tag}", display_name=f"Zorro{tag} the Fox")
    found = _search(base, alice, q=f"zORRO{tag}").json()["users"]
    assert [user["username"] for user in found] == [f"a{tag}"]
    assert found[0]["displayName"] == f"Zorro{tag} the Fox"


def test_both_kinds_merge_in_text_order_and_an_account_is_listed_once(base: str) -> None:
    tag = f"m{uuid.uuid4().hex[:8]}"
    _account(base, f"{tag}_b", display_name=f"{tag}_b too")  # matches twice: listed once
    _account(base, f"x{tag}", display_name=f"{tag}_a")  # by display name only
    who = _account(base, f"{tag}_c")
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        body = _search(base, who, q=tag, pageSize=1, cursor=cursor).json()
        seen += [user["username"] for user in body.get("users", [])]
        cursor = body.get("nextCursor", "")
        if not cursor:
            break
    assert seen == [f"x{tag}", f"{tag}_b", f"{tag}_c"]  # texts: {tag}_a, {tag}_b, {tag}_c


def test_wildcards_are_literal_and_bad_input_is_400(base: str) -> None:
    tag = f"w{uuid.uuid4().hex[:8]}"
    who = _account(base, tag)
    assert _search(base, who, q=f"{tag}%").json().get("users", []) == []
    assert _search(base, who, q=f"{tag[:3]}_{tag[4:]}").json().get("users", []) == []
    assert _search(base, who, q="").status_code == 400
    assert _search(base, who, q="x", cursor="Not A Cursor!").status_code == 400
    assert _search(base, who, q="x", pageSize=101).status_code == 400
    anonymous = requests.get(f"{base}/v1/users:search", params={"q": "x"}, timeout=30)
    assert anonymous.status_code == 401
