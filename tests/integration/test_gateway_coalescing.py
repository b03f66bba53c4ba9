"""The gateway's call coalescing can be switched off and resized live (the Gateway deployment's
`user_config`), and the API answers the same either way: replies, domain errors, concurrency.

docs/PERFORMANCE.md measures the product with coalescing on and off; this is what makes the
"off" side an honest baseline rather than a different product.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from entrypoints.launcher import LocalSystem
from tests.integration.helpers import register_and_login


@pytest.fixture(scope="module")
def base(serve_system: LocalSystem) -> str:
    return str(serve_system.addresses()["http"])


@pytest.fixture
def gateway_config(serve_system: LocalSystem) -> Iterator[Any]:
    """Redeploys the Gateway with a `user_config`; puts the settings' defaults back after."""

    def apply(config: dict[str, int]) -> None:
        serve_system.reconfigure("gateway", "Gateway", config)

    yield apply
    apply({})


def _exercise(base: str) -> None:
    """A write, reads alone and many at once, a missing post and a bad request."""
    alice = register_and_login(base, f"c_{uuid.uuid4().hex[:12]}", "coalescing password")
    created = requests.post(
        f"{base}/v1/posts", json={"content": "one hop each"}, headers=alice["headers"], timeout=30
    )
    assert created.status_code == 200, created.text
    post_id = created.json()["post"]["id"]

    def read(_: int) -> requests.Response:
        return requests.get(f"{base}/v1/posts/{post_id}", headers=alice["headers"], timeout=30)

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(read, range(48)))
    assert {reply.status_code for reply in replies} == {200}
    assert {reply.json()["post"]["content"] for reply in replies} == {"one hop each"}

    missing = requests.get(f"{base}/v1/posts/999999999999", headers=alice["headers"], timeout=30)
    assert missing.status_code == 404, missing.text
    assert missing.json()["code"] == 5  # NOT_FOUND, as the domain error said
    empty = requests.post(
        f"{base}/v1/posts", json={"content": ""}, headers=alice["headers"], timeout=30
    )
    assert empty.status_code == 400, empty.text
    assert empty.json()["code"] == 3


def test_the_api_answers_the_same_with_coalescing_off_and_resized(
    base: str, gateway_config: Any
) -> None:
    gateway_config({"coalesce_in_flight": 0})
    _exercise(base)
    gateway_config({"coalesce_in_flight": 1, "coalesce_max_batch": 4})
    _exercise(base)
