"""The e2e benchmark's PNG: latency and throughput against load, per target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness.locust import aggregated
from benchmarks.harness.report import TARGETS


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4))
    levels = sorted(int(level) for level in report["levels"])
    for target in TARGETS:
        if any(target not in report["levels"][level] for level in levels):
            continue  # not measured in this run (--targets)
        aggs = [aggregated(report["levels"][level][target]) for level in levels]
        latency.plot(levels, [a.get("p50_ms", 0) for a in aggs], marker="o", label=f"{target} p50")
        latency.plot(
            levels,
            [a.get("p99_ms", 0) for a in aggs],
            marker="x",
            linestyle="--",
            label=f"{target} p99",
        )
        throughput.plot(levels, [a.get("rps", 0) for a in aggs], marker="o", label=target)
    latency.set(xlabel="concurrent users", ylabel="latency (ms)", title="Latency against load")
    throughput.set(xlabel="concurrent users", ylabel="requests/s", title="Throughput")
    latency.legend(fontsize=7)
    throughput.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
