"""Session fixtures: one real local stack (Postgres primary + replica, Redis, broker) per run.

Started through the same `LocalSystem` code that `dmb up` uses, on free loopback ports, with its
data in a fresh folder. Ray and Serve start only when a test asks for `serve_system`. These
fixtures live here, not in tests/conftest.py, so that a unit test cannot boot the stack even by
accident: outside tests/integration they do not exist.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from dmb.domain.identity import AccessTokenIssuer
from dmb.localstack import scratch_data_dir
from dmb.localstack.process import free_port
from dmb.settings import Settings, load_settings
from entrypoints.launcher import LocalSystem


@pytest.fixture(scope="session")
def stack_data_dir() -> Iterator[Path]:
    """A world-traversable folder, so the unprivileged Postgres account can use it under root."""
    folder = scratch_data_dir("dmb-test-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def local_system(stack_data_dir: Path) -> Iterator[LocalSystem]:
    base = load_settings(
        environ={},
        data_dir=stack_data_dir,
        http_port=free_port(),
        grpc_port=free_port(),
        counter_flush_seconds=0.2,
        # Every test request comes from 127.0.0.1: a roomy IP bucket keeps them from starving
        # each other; the IP bucket itself is tested with its own small limits.
        rate_limit_ip_capacity=1_000_000,
        # Above the 250 followers of the multi-batch fan-out test; tests make a celebrity by
        # inserting this many follows in one statement.
        celebrity_threshold=300,
    )
    system = LocalSystem(base, fast_unsafe=True, start_serve=False, ray_cpus=4)
    system.start()
    yield system
    system.stop()


@pytest.fixture(scope="session")
def settings(local_system: LocalSystem) -> Settings:
    """Settings pointing at the session's real stores (migrated, with dev JWT keys)."""
    assert local_system.resolved is not None
    return local_system.resolved


@pytest.fixture(scope="session")
def serve_system(local_system: LocalSystem) -> LocalSystem:
    """The same stack plus a Ray cluster with every Serve application that exists, deployed."""
    local_system.serve()
    return local_system


@pytest.fixture
def database_url(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url.get_secret_value()


@pytest.fixture
def redis_url(settings: Settings) -> str:
    assert settings.redis_url is not None
    return settings.redis_url.get_secret_value()


# One cheap call per application: an empty request, which each answers without a store
# (INVALID_ARGUMENT from the field rules, or UNAUTHENTICATED) once the ingress routes to it.
_ROUTE_PROBES = {
    "users": "/dmb.v1.UserService/GetUser",
    "follows": "/dmb.v1.FollowService/GetStats",
    "posts": "/dmb.v1.PostService/GetPost",
    "feed": "/dmb.v1.FeedService/GetHomeFeed",
    "notifications": "/dmb.v1.NotificationService/ListNotifications",
}


def _wait_for_grpc_routes(channel: grpc.Channel, timeout: float = 120) -> None:
    """Serve reports the applications RUNNING a little before HAProxy routes gRPC to each of
    them (until then: NOT_FOUND "Application 'posts' not found"); wait for every route."""
    deadline = time.monotonic() + timeout
    for app, method in _ROUTE_PROBES.items():
        probe = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
        while True:
            try:
                probe(b"", metadata=(("application", app),), timeout=30)
                break
            except grpc.RpcError as exc:
                routed = not (
                    exc.code() == grpc.StatusCode.NOT_FOUND and "Application" in str(exc.details())
                )
                if routed and exc.code() != grpc.StatusCode.UNAVAILABLE:
                    break
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


@pytest.fixture(scope="session")
def grpc_channel(serve_system: LocalSystem) -> Iterator[grpc.Channel]:
    """A real gRPC channel to Serve's gRPC ingress, once it routes to every application."""
    channel = grpc.insecure_channel(serve_system.addresses()["grpc"])
    _wait_for_grpc_routes(channel)
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def issue_token(settings: Settings) -> Callable[[int], str]:
    """Mint an access token for a user id, as the user service would at login."""
    issuer = AccessTokenIssuer(settings)
    return lambda user_id: issuer.issue(user_id).token
