"""Embedded PostgreSQL: a primary with `wal_level=logical` and a streaming read replica.

Uses the server binaries on the machine (Debian's PostgreSQL packages). Runs as an unprivileged
account when we are root. The password is generated once per data folder and kept in files that
only the owner can read (a pgpass file for the replica's connection, never the command line).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

from dmb.localstack.process import ManagedProcess, RunAs, StackError, run_checked

SUPERUSER = "dmb"
DATABASE = "dmb"
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "wal_keep_size": "256MB",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "max_connections": "200",
    "synchronous_commit": "on",
}
_FAST_UNSAFE_SETTINGS = {"fsync": "off", "full_page_writes": "off"}


def find_bindir() -> Path:
    """The folder holding `postgres` and `initdb`: PATH first, then Debian's versioned folders."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise StackError(
            "PostgreSQL server binaries not found (no initdb on PATH or under "
            "/usr/lib/postgresql/*/bin). Install them: apt-get install postgresql"
        )
    return candidates[-1].parent


@dataclass
class PostgresCluster:
    """A primary and (optionally) a streaming replica under `root`."""

    root: Path
    primary_port: int
    replica_port: int | None
    run_as: RunAs | None
    fast_unsafe: bool = False
    extra_settings: dict[str, str] = field(default_factory=dict)  # beat the defaults above

    def __post_init__(self) -> None:
        self.bindir = find_bindir()
        self.primary_dir = self.root / "primary"
        self.replica_dir = self.root / "replica"
        self.socket_dir = self.root / "sockets"
        self.password_file = self.root / "password"
        self.pgpass_file = self.root / "pgpass"
        self.primary = self._server("postgres-primary", self.primary_dir, self.primary_port)
        self.replica = (
            self._server("postgres-replica", self.replica_dir, self.replica_port)
            if self.replica_port
            else None
        )

    # -- public ---------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            self.run_as.check_reachable(self.root)
        password = self._password()
        self._init_primary(password)
        self.primary.start()
        self.primary.wait_ready(lambda: self._answers(self.primary_port), timeout, "accepting SQL")
        self._create_database()
        if self.replica is None or self.replica_port is None:
            return
        self._init_replica()
        self.replica.start()
        self.replica.wait_ready(
            lambda: self._answers(self.replica_port or 0, in_recovery=True),
            timeout,
            "streaming from the primary",
        )

    def stop(self) -> None:
        if self.replica:
            self.replica.stop()
        self.primary.stop()

    def stop_primary(self) -> None:
        """Stop the primary alone ("fast" shutdown: open sessions are cut), as an outage or a
        restart does; the replica keeps serving reads and reconnects once it is back."""
        self.primary.stop()

    def start_primary(self, timeout: float = 60.0) -> None:
        """Start the primary again on its port and data folder (after `stop_primary`)."""
        self.primary.start()
        self.primary.wait_ready(lambda: self._answers(self.primary_port), timeout, "accepting SQL")

    def url(self, port: int) -> str:
        password = quote(self._password(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def replica_url(self) -> str | None:
        return self.url(self.replica_port) if self.replica_port else None

    # -- steps ----------------------------------------------------------------------------

    def _server(self, name: str, data_dir: Path, port: int | None) -> ManagedProcess:
        settings = {
            **_SERVER_SETTINGS,
            **(_FAST_UNSAFE_SETTINGS if self.fast_unsafe else {}),
            **self.extra_settings,
            "port": str(port),
            "unix_socket_directories": str(self.socket_dir),
        }
        if data_dir == self.replica_dir:
            # Given on the command line (which beats postgresql.auto.conf) so that a restart on
            # new ports still finds the primary; the password comes from the pgpass file.
            settings["primary_conninfo"] = (
                f"host=127.0.0.1 port={self.primary_port} user={SUPERUSER} "
                f"passfile={self.pgpass_file} application_name=dmb_replica"
            )
        argv = [str(self.bindir / "postgres"), "-D", str(data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return ManagedProcess(
            name=name,
            argv=argv,
            log_path=self.root / f"{name}.log",
            run_as=self.run_as,
            stop_signal=signal.SIGINT,  # "fast" shutdown: do not wait for clients to leave
        )

    def _password(self) -> str:
        if not self.password_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self.password_file.write_text(secrets.token_urlsafe(24))
            self.password_file.chmod(0o600)
        password = self.password_file.read_text().strip()
        self.pgpass_file.write_text(f"127.0.0.1:*:*:{SUPERUSER}:{password}\n")
        self.pgpass_file.chmod(0o600)
        if self.run_as:
            os.chown(self.pgpass_file, self.run_as.uid, self.run_as.gid)
        return password

    def _init_primary(self, password: str) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            os.chown(self.root, self.run_as.uid, self.run_as.gid)
            os.chown(self.socket_dir, self.run_as.uid, self.run_as.gid)
        if (self.primary_dir / "PG_VERSION").exists():
            return
        if self.primary_dir.exists():
            shutil.rmtree(self.primary_dir)  # a half-made folder from an interrupted initdb
        initdb_password = self.root / "initdb-password"
        initdb_password.write_text(password)
        initdb_password.chmod(0o600)
        if self.run_as:
            os.chown(initdb_password, self.run_as.uid, self.run_as.gid)
        try:
            run_checked(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.primary_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={initdb_password}",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                "initdb",
                self.root / "initdb.log",
                run_as=self.run_as,
            )
        finally:
            initdb_password.unlink(missing_ok=True)

    def _init_replica(self) -> None:
        if (self.replica_dir / "PG_VERSION").exists():
            return
        if self.replica_dir.exists():
            shutil.rmtree(self.replica_dir)
        run_checked(
            [
                str(self.bindir / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.primary_port),
                "-U",
                SUPERUSER,
                "-D",
                str(self.replica_dir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-password",
            ],
            "pg_basebackup (creating the read replica)",
            self.root / "basebackup.log",
            run_as=self.run_as,
            env={**os.environ, "PGPASSFILE": str(self.pgpass_file)},
        )

    def _answers(self, port: int, in_recovery: bool = False) -> bool:
        with psycopg.connect(
            self.url(port).rsplit("/", 1)[0] + "/postgres", connect_timeout=2
        ) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return row is not None and bool(row[0]) == in_recovery

    def _create_database(self) -> None:
        admin_url = self.url(self.primary_port).rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
