"""The login backoff's arithmetic and the client-address rule (pure logic)."""

from __future__ import annotations

import pytest

from dmb.domain.client_address import client_address, grpc_peer_host
from dmb.domain.login_guard import backoff_ms
from dmb.errors import TooManyAttempts
from serve_apps.status_details import details_of, retry_after_header


def test_free_failures_then_doubling_locks_up_to_the_cap() -> None:
    locks = [backoff_ms(n, free=5, base_seconds=1.0, max_seconds=10.0) for n in range(1, 12)]
    assert locks == [0, 0, 0, 0, 0, 1000, 2000, 4000, 8000, 10000, 10000]


def test_a_huge_failure_count_stays_at_the_cap() -> None:
    assert backoff_ms(10_000, free=5, base_seconds=1.0, max_seconds=900.0) == 900_000


@pytest.mark.parametrize(
    ("forwarded", "peer", "hops", "expected"),
    [
        (None, "10.0.0.7", 0, "10.0.0.7"),
        ("6.6.6.6", "10.0.0.7", 0, "10.0.0.7"),  # no trusted proxy: the header is the client's
        ("6.6.6.6, 203.0.113.9", "10.0.0.7", 1, "203.0.113.9"),  # the ALB's entry, not the spoof
        ("203.0.113.9, 10.1.1.1", "10.0.0.7", 2, "203.0.113.9"),
        ("203.0.113.9", "10.0.0.7", 2, "10.0.0.7"),  # fewer entries than proxies: not via them
        (" , ", None, 1, "unknown"),
    ],
)
def test_client_address(forwarded: str | None, peer: str | None, hops: int, expected: str) -> None:
    assert client_address(forwarded, peer, hops) == expected


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv6:[::1]:51234", "::1"),
        ("ipv6:%5B::1%5D:51234", "::1"),
        ("unix:/tmp/socket", None),
        ("", None),
    ],
)
def test_grpc_peer_host(peer: str, host: str | None) -> None:
    assert grpc_peer_host(peer) == host


def test_a_lock_carries_retry_info_and_retry_after() -> None:
    error = TooManyAttempts("locked", 4)
    (detail,) = details_of(error)
    assert detail.type_url.endswith("google.rpc.RetryInfo")
    assert retry_after_header(error) == {"Retry-After": "4"}
