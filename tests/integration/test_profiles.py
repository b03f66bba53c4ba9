"""Profiles over HTTP (issue 15 item 1): PATCH /v1/users/me with an AIP-134 field mask."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from entrypoints.launcher import LocalSystem
from tests.integration.helpers import register_and_login

PASSWORD = "profile password"


@pytest.fixture(scope="module")
def base(serve_system: LocalSystem) -> str:
    return str(serve_system.addresses()["http"])


def _account(base: str) -> dict[str, Any]:
    return register_and_login(base, f"p_{uuid.uuid4().hex[:12]}", PASSWORD)


def _patch(base: str, who: dict[str, Any], body: dict[str, Any]) -> requests.Response:
    return requests.patch(f"{base}/v1/users/me", json=body, headers=who["headers"], timeout=30)


def _get(base: str, who: dict[str, Any], user_id: str) -> dict[str, Any]:
    got = requests.get(f"{base}/v1/users/{user_id}", headers=who["headers"], timeout=30)
    assert got.status_code == 200, got.text
    user: dict[str, Any] = got.json()["user"]
    return user


def test_only_masked_fields_change(base: str) -> None:
    alice = _account(base)
    both = {"profile": {"displayName": "Alice A.", "bio": "hello"}, "updateMask": "*"}
    assert _patch(base, alice, both).status_code == 200
    one = {"profile": {"displayName": "", "bio": "new bio"}, "updateMask": "bio"}
    changed = _patch(base, alice, one)
    assert changed.status_code == 200, changed.text
    assert changed.json()["user"]["displayName"] == "Alice A."  # not in the mask: kept
    bob = _account(base)
    seen = _get(base, bob, alice["userId"])
    assert (seen["displayName"], seen["bio"]) == ("Alice A.", "new bio")
    cleared = {"profile": {}, "updateMask": "displayName"}
    assert _patch(base, alice, cleared).json()["user"]["displayName"] == ""


def test_bad_mask_or_overlong_field_is_400_and_changes_nothing(base: str) -> None:
    alice = _account(base)
    _patch(base, alice, {"profile": {"bio": "kept"}, "updateMask": "bio"})
    for body in (
        {"profile": {"bio": "x"}, "updateMask": "bio,email"},
        {"profile": {"bio": "x"}, "updateMask": "*,bio"},
        {"profile": {"bio": "x" * 301}, "updateMask": "bio"},
        {"profile": {"displayName": "y" * 65}, "updateMask": "displayName"},
    ):
        response = _patch(base, alice, body)
        assert response.status_code == 400, (body, response.text)
    assert _get(base, alice, alice["userId"])["bio"] == "kept"


def test_post_hydration_shows_the_display_name(base: str) -> None:
    alice = _account(base)
    _patch(base, alice, {"profile": {"displayName": "Alice"}, "updateMask": "displayName"})
    post = requests.post(
        f"{base}/v1/posts", json={"content": "hi"}, headers=alice["headers"], timeout=30
    )
    assert post.status_code == 200, post.text
    got = requests.get(
        f"{base}/v1/posts/{post.json()['post']['id']}", headers=alice["headers"], timeout=30
    )
    assert got.json()["post"]["authorDisplayName"] == "Alice"


def test_get_me_reads_the_callers_own_account_with_its_email(base: str) -> None:
    alice = _account(base)
    _patch(base, alice, {"profile": {"bio": "mine"}, "updateMask": "bio"})
    me = requests.get(f"{base}/v1/users/me", headers=alice["headers"], timeout=30)
    assert me.status_code == 200, me.text
    user = me.json()["user"]
    assert user["id"] == alice["userId"]
    assert user["email"].endswith("@example.com")
    assert user["bio"] == "mine"
    assert requests.get(f"{base}/v1/users/me", timeout=30).status_code == 401
    allowed = requests.options(f"{base}/v1/users/me", timeout=30).headers["Allow"]
    assert set(allowed.replace(" ", "").split(",")) == {"GET", "PATCH", "DELETE"}  # all documented


def test_a_mask_with_sub_paths_or_nothing_is_refused(base: str) -> None:
    alice = _account(base)
    for mask in ("", "displayName.first", "bio,"):
        response = _patch(base, alice, {"profile": {"bio": "x"}, "updateMask": mask})
        assert response.status_code == 400, (mask, response.text)
