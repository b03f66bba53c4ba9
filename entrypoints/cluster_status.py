"""Which node runs what: Serve replicas, the pipeline's actors and the fan-out workers, per node.

Asked of the running cluster's GCS by a short-lived driver (`dmb status` connects, reads, leaves).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SERVE_SYSTEM = ("ServeController", "ProxyActor", "HAProxyManager")


@dataclass
class NodeReport:
    name: str
    node_id: str
    alive: bool
    replicas: list[str] = field(default_factory=list)  # app/Deployment, one per replica
    actors: list[str] = field(default_factory=list)  # named pipeline actors
    fanout_workers: int = 0
    serve_system: list[str] = field(default_factory=list)
    # Prometheus scrape address of this node's Ray metrics export (our ray.util.metrics series
    # and Ray's own), e.g. http://10.0.0.5:8080/metrics; None when Ray does not say.
    metrics_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def placement(gcs_address: str, names: dict[str, str] | None = None) -> list[NodeReport]:
    """Every node of the cluster at `gcs_address`, with what runs on it right now. `names` (our
    node name -> Ray node id) names the nodes that are gone, whose resources Ray forgot."""
    import ray
    from ray._private import state

    ray.init(
        address=gcs_address,
        namespace="dmb",
        log_to_driver=False,
        configure_logging=False,
        logging_level=logging.ERROR,
    )
    try:
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
        actors = state.actors()
    finally:
        ray.shutdown()
    known = {node_id: name for name, node_id in (names or {}).items()}
    reports: dict[str, NodeReport] = {}
    for node in nodes:
        ours = sorted(r for r in node.get("Resources", {}) if r.startswith("dmb_node_"))
        node_id = str(node["NodeID"])
        name = ours[0] if ours else known.get(node_id, node_id[:8])
        reports[node_id] = NodeReport(name, node_id, node["Alive"], metrics_url=metrics_url(node))
    for actor in actors.values():
        if actor.get("State") != "ALIVE":
            continue
        report = reports.get(str(actor.get("Address", {}).get("NodeID")))
        if report is None:
            continue
        _place(report, str(actor.get("ActorClassName") or actor.get("ClassName") or ""), actor)
    return sorted(reports.values(), key=lambda r: (not r.alive, r.name))


def metrics_url(node: dict[str, Any]) -> str | None:
    host, port = node.get("NodeManagerAddress"), node.get("MetricsExportPort")
    return f"http://{host}:{port}/metrics" if host and port else None


def _place(report: NodeReport, class_name: str, actor: dict[str, Any]) -> None:
    if class_name.startswith("ServeReplica:"):
        _, app, deployment = class_name.split(":", 2)
        report.replicas.append(f"{app}/{deployment}")
    elif class_name == "FanoutWorker":
        report.fanout_workers += 1
    elif class_name in SERVE_SYSTEM:
        report.serve_system.append(class_name)
    elif actor.get("Name") and not str(actor["Name"]).startswith("SERVE_"):
        report.actors.append(str(actor["Name"]))  # ours: the pipeline's named actors


def describe(reports: list[NodeReport]) -> list[str]:
    """The placement as lines for a terminal."""
    lines = []
    for report in reports:
        mark = "up  " if report.alive else "DOWN"
        lines.append(f"  {mark} node {report.name} ({report.node_id[:12]})")
        if not report.alive:
            continue
        if report.metrics_url:
            lines.append(f"         metrics:  {report.metrics_url}")
        replicas = Counter(report.replicas)
        if replicas:
            listed = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in replicas.items())
            lines.append(f"         replicas: {listed}")
        if report.actors:
            lines.append(f"         actors:   {', '.join(sorted(report.actors))}")
        if report.fanout_workers:
            lines.append(f"         fan-out workers: {report.fanout_workers}")
    return lines
