"""A Ray cluster on this machine: the head in this process, and N-1 worker nodes as separate
`ray start --address ... --block` processes, the way Ray's own tests simulate a cluster.

Every node gets a small logical CPU share and a custom resource that names it (`dmb_node_0` is the
head, `dmb_node_1`... the workers), so an operator (`dmb status`) and the tests can tell which node
runs what; the head also carries `dmb_ingress`, which the local Serve config pins the HTTP gateway
to (locally the head is the ingress node, as a load balancer's target would be). Worker nodes are
children of this process: each in its own process group, so stopping or killing a node takes its
raylet and every worker process on it, and they die with us.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmb.localstack.process import ManagedProcess, StackError, free_port

HEAD_NODE = "dmb_node_0"
INGRESS_RESOURCE = "dmb_ingress"
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # per node: enough for our messages, small on a laptop


def node_name(index: int) -> str:
    return f"dmb_node_{index}"


@dataclass
class LocalRayCluster:
    """`nodes` Ray nodes on this machine; `cpus` logical CPUs each (None: the head takes the
    machine's, as a one-node cluster does)."""

    nodes: int
    log_dir: Path
    cpus: int | None = None
    workers: dict[str, ManagedProcess] = field(default_factory=dict, init=False)
    gcs_address: str = field(default="", init=False)

    def start(self) -> None:
        import ray

        if self.nodes < 1:
            raise ValueError("a cluster needs at least one node")
        ray.init(
            address="local",  # never attach to some other cluster on this machine
            namespace="dmb",
            num_cpus=self._node_cpus() if self.nodes > 1 else self.cpus,
            resources={HEAD_NODE: 1, INGRESS_RESOURCE: 1},
            object_store_memory=OBJECT_STORE_BYTES,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
        )
        self.gcs_address = ray.get_runtime_context().gcs_address
        try:
            for index in range(1, self.nodes):  # one at a time: each takes its ports first
                self.add_node(index)
                self.wait_for_nodes(index + 1)
        except BaseException:
            self.stop()
            raise

    def add_node(self, index: int) -> ManagedProcess:
        """Start worker node `index` (a new one, or again after it was lost)."""
        name = node_name(index)
        process = ManagedProcess(
            name=f"ray-{name}",
            argv=[
                str(Path(sys.executable).with_name("ray")),
                "start",
                "--address",
                self.gcs_address,
                "--num-cpus",
                str(self._node_cpus()),
                "--resources",
                json.dumps({name: 1}),
                "--object-store-memory",
                str(OBJECT_STORE_BYTES),
                # Every node of this machine needs ports of its own: Ray's defaults would collide.
                *_own_ports(
                    "--node-manager-port",
                    "--object-manager-port",
                    "--dashboard-agent-listen-port",
                    "--dashboard-agent-grpc-port",
                    "--runtime-env-agent-port",
                    "--metrics-export-port",
                ),
                "--include-log-monitor",
                "false",  # one per machine: the head's
                "--disable-usage-stats",
                "--block",
            ],
            log_path=self.log_dir / f"ray-{name}.log",
            env=dict(os.environ),  # settings and Ray flags, as the head's workers get them
        )
        process.start()
        self.workers[name] = process
        return process

    def wait_for_nodes(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.alive_nodes()) >= count:
                return
            for name, process in self.workers.items():
                if not process.alive():
                    raise StackError(f"Ray node {name} exited while joining: {process.log_path}")
            time.sleep(0.5)
        raise StackError(f"{count} Ray nodes did not join within {timeout:.0f}s")

    def alive_nodes(self) -> dict[str, str]:
        """Our node name -> Ray node id, for the nodes Ray sees alive."""
        import ray

        found = {}
        for node in ray.nodes():  # type: ignore[no-untyped-call]
            names = [r for r in node.get("Resources", {}) if r.startswith("dmb_node_")]
            if node.get("Alive") and names:
                found[names[0]] = str(node["NodeID"])
        return found

    def stop(self) -> None:
        import ray

        for process in self.workers.values():
            process.stop(timeout=30)
        self.workers.clear()
        if ray.is_initialized():
            ray.shutdown()

    def describe(self) -> dict[str, Any]:
        """For the state file (`dmb status`, `dmb down`): where the cluster is, its nodes' Ray
        ids (so a lost node is still named), and the worker nodes' processes."""
        return {
            "gcs_address": self.gcs_address,
            "session_dir": _session_dir(),  # where Ray writes the workers' and replicas' logs
            "node_ids": self.alive_nodes(),
            "nodes": {
                name: {"pid": process.pid, "log": str(process.log_path)}
                for name, process in self.workers.items()
            },
        }

    def _node_cpus(self) -> int:
        return self.cpus if self.cpus is not None else 1


def _session_dir() -> str | None:
    import ray

    node = ray._private.worker.global_worker.node  # no public API names the folder
    return str(node.get_session_dir_path()) if node is not None else None


def _own_ports(*options: str) -> list[str]:
    """Each option with a port that is free now (distinct ones: free_port asks the OS each time,
    and every socket it opened is closed, so a port can come back; retry until all differ)."""
    while True:
        ports = [free_port() for _ in options]
        if len(set(ports)) == len(ports):
            return [
                part
                for option, port in zip(options, ports, strict=True)
                for part in (option, str(port))
            ]
