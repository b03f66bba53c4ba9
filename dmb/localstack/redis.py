"""Embedded Redis: one server on loopback, password-protected, no persistence.

Redis only holds what can be rebuilt (feeds, counters, buckets, denylist entries): the feed and
counter code rebuild from Postgres when Redis loses data, so the local server keeps nothing on disk.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from dmb.localstack.process import ManagedProcess, StackError


def find_redis_server() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise StackError("redis-server not found. Install it: apt-get install redis-server")
    return found


@dataclass
class RedisServer:
    root: Path
    port: int

    def __post_init__(self) -> None:
        self.config_path = self.root / "redis.conf"
        self.password_file = self.root / "password"
        self.process = ManagedProcess(
            name="redis",
            argv=[find_redis_server(), str(self.config_path)],
            log_path=self.root / "redis.log",
        )

    def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # The password goes in a 0600 config file, not on the command line where `ps` shows it.
        self.config_path.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    "protected-mode yes",
                    "daemonize no",
                    f"dir {self.root}",
                    'save ""',
                    "appendonly no",
                    'logfile ""',
                    f"requirepass {self._password()}",
                    "",
                ]
            )
        )
        self.config_path.chmod(0o600)
        self.process.start()
        self.process.wait_ready(self._answers, timeout, "answering PING")

    def stop(self) -> None:
        self.process.stop()

    @property
    def url(self) -> str:
        return f"redis://:{quote(self._password(), safe='')}@127.0.0.1:{self.port}/0"

    def _password(self) -> str:
        if not self.password_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self.password_file.write_text(secrets.token_urlsafe(24))
            self.password_file.chmod(0o600)
        return self.password_file.read_text().strip()

    def _answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
