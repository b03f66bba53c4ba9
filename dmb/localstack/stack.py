"""The local stack: the real stores `dmb up`, the tests and the benchmarks run against.

Starts only what the settings do not already point at (a given `DMB_DATABASE_URL` replaces the
embedded Postgres, and so on), on free loopback ports, with every file under one data folder.
A lock file keeps two stacks off the same folder; `stack.json` tells `dmb status` and
`dmb down` what runs where.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dmb.localstack.broker import KafkaBroker
from dmb.localstack.jwt_keys import DevKeyPair
from dmb.localstack.postgres import PostgresCluster
from dmb.localstack.process import RunAs, StackError, free_port
from dmb.localstack.redis import RedisServer
from dmb.settings import Settings

STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"


@dataclass
class LocalStack:
    """Embedded stores for whatever `settings` leaves unset. Use as a context manager."""

    settings: Settings
    with_replica: bool = True
    fast_unsafe: bool = False
    postgres: PostgresCluster | None = field(default=None, init=False)
    redis: RedisServer | None = field(default=None, init=False)
    broker: KafkaBroker | None = field(default=None, init=False)
    _lock: IO[str] | None = field(default=None, init=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Settings:
        """Start the missing stores; return settings that point at all of them."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            if self.settings.database_url is None:
                self.postgres = PostgresCluster(
                    root=self.data_dir / "postgres",
                    primary_port=free_port(),
                    replica_port=free_port() if self.with_replica else None,
                    run_as=RunAs.for_current_user(),
                    fast_unsafe=self.fast_unsafe,
                )
                self.postgres.start()
            if self.settings.redis_url is None:
                self.redis = RedisServer(self.data_dir / "redis", free_port())
                self.redis.start()
            if self.settings.kafka_bootstrap is None:
                self.broker = KafkaBroker(self.data_dir / "broker", free_port())
                self.broker.start()
        except BaseException:
            self.stop()
            raise
        self.write_state()
        return self.resolved_settings()

    def stop(self) -> None:
        """Stop everything this stack started, newest first; safe to call twice."""
        for component in (self.broker, self.redis, self.postgres):
            if component is not None:
                component.stop()
        self.broker = self.redis = self.postgres = None
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def resolved_settings(self) -> Settings:
        """The settings with embedded store URLs and development JWT keys filled in."""
        overrides: dict[str, Any] = {}
        if self.postgres is not None:
            overrides["database_url"] = self.postgres.primary_url
            if self.postgres.replica_url:
                overrides["database_replica_url"] = self.postgres.replica_url
        if self.redis is not None:
            overrides["redis_url"] = self.redis.url
        if self.broker is not None:
            overrides["kafka_bootstrap"] = self.broker.bootstrap
        if self.settings.jwt_private_key is None:
            keys = DevKeyPair.load_or_create(self.data_dir / "jwt")
            overrides.update(
                jwt_algorithm="EdDSA",
                jwt_private_key=keys.private_pem,
                jwt_public_keys={keys.kid: keys.public_pem},
                jwt_active_kid=keys.kid,
            )
        return self.settings.with_overrides(overrides)

    def components(self) -> dict[str, dict[str, Any]]:
        """What runs where, without secrets (for `dmb status` and start-up output)."""
        found: dict[str, dict[str, Any]] = {}
        if self.postgres is not None:
            found["postgres-primary"] = _describe(
                self.postgres.primary.pid,
                self.postgres.primary_port,
                self.postgres.primary.log_path,
            )
            if self.postgres.replica is not None:
                found["postgres-replica"] = _describe(
                    self.postgres.replica.pid,
                    self.postgres.replica_port,
                    self.postgres.replica.log_path,
                )
        if self.redis is not None:
            found["redis"] = _describe(
                self.redis.process.pid, self.redis.port, self.redis.process.log_path
            )
        if self.broker is not None:
            found["broker"] = _describe(
                self.broker.process.pid, self.broker.port, self.broker.process.log_path
            )
        return found

    def write_state(self, **extra: Any) -> None:
        state = {
            "owner_pid": os.getpid(),
            "started_at": time.time(),
            "components": self.components(),
        }
        state.update(extra)
        path = self.data_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2))

    def _take_lock(self) -> None:
        lock = (self.data_dir / LOCK_FILE).open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StackError(
                f"another local stack is already running on {self.data_dir} "
                "(see `dmb status`; stop it with `dmb down`)"
            ) from None
        self._lock = lock


def _describe(pid: int | None, port: int | None, log: Path) -> dict[str, Any]:
    return {"pid": pid, "port": port, "log": str(log)}


def scratch_data_dir(prefix: str) -> Path:
    """A fresh data folder for a throwaway stack (tests, benchmarks), under /tmp (short paths
    for sockets) and world-enterable: Postgres runs as its own unprivileged user beneath it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    return folder


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The state a running stack wrote, or None when none runs on `data_dir`."""
    path = data_dir / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state
