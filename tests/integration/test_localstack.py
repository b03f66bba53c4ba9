"""The local stack: real stores start, answer, refuse a second owner, stop without orphans,
step aside for external URLs, and explain failures with the log's location."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from dmb.localstack import LocalStack, StackError, read_state, scratch_data_dir
from dmb.localstack.process import pid_alive
from dmb.localstack.redis import RedisServer
from dmb.settings import Settings, load_settings
from entrypoints.launcher import LocalSystem
from tests.integration.helpers import haproxy_configs


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    folder = scratch_data_dir("dmb-stack-")
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def test_session_stack_serves_primary_replica_redis_and_broker(settings: Settings) -> None:
    assert settings.database_url is not None
    assert settings.database_replica_url is not None
    assert settings.redis_url is not None
    with psycopg.connect(settings.database_replica_url.get_secret_value()) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row == (True,)
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        level = conn.execute("SHOW wal_level").fetchone()
    assert level == ("logical",)
    assert redis.Redis.from_url(settings.redis_url.get_secret_value()).ping()
    assert settings.kafka_bootstrap is not None
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        assert isinstance(admin.list_topics(), list)
    finally:
        admin.close()


def test_writes_on_the_primary_reach_the_replica(settings: Settings) -> None:
    assert settings.database_url is not None
    assert settings.database_replica_url is not None
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS replication_probe (x int)")
        conn.execute("INSERT INTO replication_probe VALUES (42)")
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert lsn is not None
    with psycopg.connect(settings.database_replica_url.get_secret_value()) as conn:
        for _ in range(100):
            caught_up = conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn[0],)
            ).fetchone()
            if caught_up == (True,):
                break
            conn.execute("SELECT pg_sleep(0.05)")
        assert conn.execute("SELECT 42 IN (SELECT x FROM replication_probe)").fetchone() == (True,)


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful when the tests run as root")
def test_postgres_runs_unprivileged_when_we_are_root(local_system: LocalSystem) -> None:
    assert local_system.stack is not None
    assert local_system.stack.postgres is not None
    pid = local_system.stack.postgres.primary.pid
    assert pid is not None
    assert os.stat(f"/proc/{pid}").st_uid != 0


def test_start_stop_leaves_no_processes_and_second_owner_is_refused(scratch_dir: Path) -> None:
    settings = load_settings(environ={}, data_dir=scratch_dir)
    stack = LocalStack(settings, with_replica=False, fast_unsafe=True)
    stack.start()
    try:
        pids = [info["pid"] for info in stack.components().values()]
        assert len(pids) == 3
        assert all(pid_alive(pid) for pid in pids)
        assert read_state(scratch_dir) is not None
        with pytest.raises(StackError, match="already running"):
            LocalStack(settings, with_replica=False).start()
    finally:
        stack.stop()
    assert not any(pid_alive(pid) for pid in pids)
    assert read_state(scratch_dir) is None


def test_given_store_urls_replace_the_embedded_ones(scratch_dir: Path, settings: Settings) -> None:
    external = load_settings(
        environ={},
        data_dir=scratch_dir,
        database_url=settings.database_url.get_secret_value() if settings.database_url else None,
        redis_url=settings.redis_url.get_secret_value() if settings.redis_url else None,
        kafka_bootstrap=settings.kafka_bootstrap,
    )
    with LocalStack(external) as stack:
        assert stack.components() == {}
        resolved = stack.resolved_settings()
    assert resolved.database_url == settings.database_url
    assert resolved.database_replica_url is None  # reads fall back to the primary
    assert resolved.jwt_active_kid is not None  # development keys are still provided


def test_a_store_that_cannot_start_says_which_and_where_the_log_is(scratch_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = RedisServer(scratch_dir / "redis", port)
        with pytest.raises(StackError) as caught:
            server.start(timeout=10)
    message = str(caught.value)
    assert "redis" in message
    assert str(scratch_dir / "redis" / "redis.log") in message
    assert not server.process.alive()


def test_development_keys_are_made_once_and_kept_private(settings: Settings) -> None:
    key_file = settings.data_dir.resolve() / "jwt" / "dev-signing-key.pem"
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o077 == 0
    assert settings.jwt_active_kid in settings.jwt_public_keys


def test_the_ingress_backup_is_this_systems_own_fallback_proxy(serve_system: LocalSystem) -> None:
    """HAProxy sends a request to Serve's fallback proxy when an app's replica is not marked up;
    on Ray's fixed ports (8500, 9500, SO_REUSEPORT) that proxy could be another system's on the
    same machine, which then answered with its own database."""
    config = "\n".join(haproxy_configs(Path(os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])))
    backups = {
        int(port) for port in re.findall(r"SERVE_PROXY_ACTOR-fallback-\S+ [\d.]+:(\d+)", config)
    }
    ours = {
        int(os.environ.get("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "8500")),  # Ray's defaults
        int(os.environ.get("RAY_SERVE_FALLBACK_PROXY_GRPC_PORT", "9500")),
    }
    assert backups == ours
    assert not ours & {8500, 9500}
    for port in ours:
        listeners = {
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == port
        }
        assert len(listeners) == 1, f"port {port}: {listeners}"


def test_the_local_ingress_logs_no_line_per_request(serve_system: LocalSystem) -> None:
    """With Ray's default HAProxy writes a log line per request that the HAProxyManager actor
    parses in Python, ~60 us of CPU a request on a machine the whole system shares; locally the
    gateway's own series count the same requests (entrypoints/launcher.py, LOCAL_SERVE_TUNING)."""
    configs = haproxy_configs(Path(os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]))
    assert configs
    assert "backend " in configs[0]  # a rendered config with its backends, not an empty one
    assert not any("log-format-sd" in config for config in configs)
