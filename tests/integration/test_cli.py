"""The `dmb` command as a user runs it: up, status, migrate, down, and clear failures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dmb.localstack import read_state, scratch_data_dir
from dmb.localstack.process import free_port, pid_alive
from entrypoints.launcher import LocalSystem, ingress_folder
from tests.integration.helpers import haproxy_configs

DMB = [sys.executable, "-m", "entrypoints.cli"]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    folder = scratch_data_dir("dmb-cli-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMB_")}
    env.update(
        DMB_DATA_DIR=str(data_dir),
        DMB_HTTP_PORT=str(free_port()),
        DMB_GRPC_PORT=str(free_port()),
        **extra,
    )
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DMB, *args], env=env, capture_output=True, text=True, timeout=120)


def test_a_bad_setting_stops_the_command_with_its_name(data_dir: Path) -> None:
    result = _run(["status"], _env(data_dir, DMB_FANOUT_WORKERS="many"))
    assert result.returncode == 2
    assert "DMB_FANOUT_WORKERS" in result.stderr


def test_status_when_nothing_runs(data_dir: Path) -> None:
    result = _run(["status"], _env(data_dir))
    assert result.returncode == 3
    assert "not running" in result.stdout


def test_up_status_migrate_down(data_dir: Path, serve_system: LocalSystem) -> None:
    """Beside the test session's own running system: two systems on one machine must not
    collide (HAProxy's stats and metrics listeners once had fixed ports)."""
    env = _env(data_dir)
    log_path = data_dir / "up.out"
    with log_path.open("w") as log:
        up = subprocess.Popen(
            [*DMB, "up", "--no-replica"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and up.poll() is None:
            if "running." in log_path.read_text():
                break
            time.sleep(0.5)
        output = log_path.read_text()
        assert "running." in output, output
        assert f"HTTP  http://127.0.0.1:{env['DMB_HTTP_PORT']}" in output
        assert f"gRPC  127.0.0.1:{env['DMB_GRPC_PORT']}" in output
        health = requests.get(f"http://127.0.0.1:{env['DMB_HTTP_PORT']}/healthz", timeout=30)
        assert health.status_code == 200, health.text
        assert serve_system.addresses()["http"] != f"http://127.0.0.1:{env['DMB_HTTP_PORT']}"

        status = _run(["status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "postgres-primary" in status.stdout
        assert "DOWN" not in status.stdout

        migrate = _run(["migrate"], env)
        assert migrate.returncode == 0, migrate.stderr
        assert "up to date" in migrate.stdout

        state = read_state(data_dir)
        assert state is not None
        pids = [int(info["pid"]) for info in state["components"].values()]

        ingress = ingress_folder(data_dir.resolve())
        assert haproxy_configs(ingress)  # HAProxy's files, in a folder of its own

        down = _run(["down"], env)
        assert down.returncode == 0, down.stderr
        assert up.wait(timeout=60) == 0, log_path.read_text()
        assert "kill" not in down.stdout  # it stopped cleanly, nothing had to be killed
        assert not any(pid_alive(pid) for pid in pids)
        assert not ingress.exists()  # each `dmb up` once left its folder behind in /tmp
        # Serve stopped cleanly: the replicas drained instead of being killed when the
        # controller's 30 s ran out (they once sat out a 30 s load-balancer window first).
        assert "failed to shut down" not in log_path.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
