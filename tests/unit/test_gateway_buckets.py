"""Token-bucket arithmetic (the reference model of ratelimit.lua), decisions and key layout."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from dmb.domain.buckets import (
    BucketSpec,
    BucketState,
    decide,
    degraded,
    refill,
    request_buckets,
    take_all,
)
from dmb.settings import load_settings

IP = BucketSpec("ip", capacity=1000, refill_per_sec=10)
USER = BucketSpec("user", capacity=100, refill_per_sec=10)


def test_an_unknown_bucket_starts_full() -> None:
    assert refill(USER, None, None, now=5.0) == 100


def test_refill_is_linear_in_time_and_capped() -> None:
    assert refill(USER, tokens=10, at=100.0, now=102.5) == 35
    assert refill(USER, tokens=90, at=100.0, now=200.0) == 100
    assert refill(USER, tokens=10, at=100.0, now=99.0) == 10  # a clock step back adds nothing


def test_all_buckets_are_charged_or_none() -> None:
    allowed, states = take_all([IP, USER], [500.0, 3.0])
    assert allowed
    assert [s.tokens for s in states] == [499.0, 2.0]
    refused, states = take_all([IP, USER], [500.0, 0.5])
    assert not refused
    assert [s.tokens for s in states] == [500.0, 0.5]  # the IP bucket spent nothing
    assert states[1].retry_after == pytest.approx(0.05)  # half a token at 10 per second
    assert states[0].retry_after == 0


def test_a_drained_bucket_says_when_to_retry_and_when_it_is_full() -> None:
    slow = BucketSpec("slow", capacity=2, refill_per_sec=0.5)
    allowed, (state,) = take_all([slow], [1.0])
    assert allowed
    assert state.tokens == 0
    assert state.retry_after == 2.0
    assert state.reset_after == 4.0


def test_the_fullest_bucket_never_answers_the_headers() -> None:
    roomy = BucketState(IP, tokens=900, retry_after=0, reset_after=10)
    tight = BucketState(USER, tokens=5.7, retry_after=0, reset_after=9.43)
    decision = decide(True, [roomy, tight])
    assert decision.headers() == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "5",
        "RateLimit-Reset": "10",
    }


def test_a_refusal_waits_for_the_slowest_bucket() -> None:
    roomy = BucketState(IP, tokens=900, retry_after=0, reset_after=10)
    empty = BucketState(USER, tokens=0.4, retry_after=0.06, reset_after=9.96)
    decision = decide(False, [roomy, empty])
    assert not decision.allowed
    assert decision.headers()["Retry-After"] == "1"  # never 0: clients would spin
    assert decision.headers()["RateLimit-Remaining"] == "0"
    assert decision.limit == 100


def test_fail_open_shows_the_tightest_limit() -> None:
    decision = degraded([IP, USER])
    assert decision.allowed
    assert decision.degraded
    assert decision.limit == 100


def test_anonymous_requests_have_one_ip_bucket() -> None:
    settings = load_settings(environ={})
    (bucket,) = request_buckets(settings, "10.0.0.1", None)
    assert bucket.key == "dmb:rl:{ip:10.0.0.1}"
    assert (bucket.capacity, bucket.refill_per_sec) == (1000, 10)


def test_a_users_buckets_share_one_cluster_slot_and_users_spread() -> None:
    settings = load_settings(
        environ={}, rate_limit_user_capacity=7, rate_limit_user_refill_per_sec=0.5
    )
    ip_bucket, user_bucket = request_buckets(settings, "2001:db8::1", 42)
    assert key_slot(ip_bucket.key.encode()) == key_slot(user_bucket.key.encode())
    assert (user_bucket.capacity, user_bucket.refill_per_sec) == (7, 0.5)
    assert ip_bucket.capacity == settings.rate_limit_ip_capacity
    slots = {
        key_slot(request_buckets(settings, "10.0.0.1", uid)[1].key.encode()) for uid in range(50)
    }
    assert len(slots) > 40  # no hot slot: buckets spread over the cluster
