"""Session fixtures: one real local stack (Postgres primary + replica, Redis, broker) per run.

Started through the same `LocalSystem` code that `dmb up` uses, on free loopback ports, with its
data in a fresh folder. Ray and Serve start only when a test asks for `serve_system`. These
fixtures live here, not in tests/conftest.py, so that a unit test cannot boot the stack even by
accident: outside tests/integration they do not exist.
"""

from __future__ import annotations

import shutil
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


@pytest.fixture(scope="session")
def grpc_channel(serve_system: LocalSystem) -> Iterator[grpc.Channel]:
    """A real gRPC channel to Serve's gRPC ingress."""
    channel = grpc.insecure_channel(serve_system.addresses()["grpc"])
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def issue_token(settings: Settings) -> Callable[[int], str]:
    """Mint an access token for a user id, as the user service would at login."""
    issuer = AccessTokenIssuer(settings)
    return lambda user_id: issuer.issue(user_id).token
