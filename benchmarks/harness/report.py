"""The e2e benchmark's table: every target at every load level, with its ratios."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.harness.locust import ERRORS, aggregated

TARGETS = ("product", "product_direct", "feed_only", "post_only", "monolith", "hop", "bare")


def print_report(report: dict[str, Any]) -> None:
    print(
        f"\n{'users':>5} {'target':<14} {'req/s':>8} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'err%':>6} {'vs hop':>7} {'vs mono':>8}"
    )
    for level, runs in report["levels"].items():
        hop_rps = aggregated(runs.get("hop", {})).get("rps", 0) or float("nan")
        mono_rps = aggregated(runs.get("monolith", {})).get("rps", 0) or float("nan")
        for target in (target for target in TARGETS if target in runs):
            agg = aggregated(runs[target])
            print(
                f"{level:>5} {target:<14} {agg.get('rps', 0):>8.0f} {agg.get('p50_ms', 0):>7.0f} "
                f"{agg.get('p95_ms', 0):>7.0f} {agg.get('p99_ms', 0):>7.0f} "
                f"{100 * agg.get('error_rate', 0):>6.2f} "
                f"{agg.get('rps', 0) / hop_rps:>7.2f} {agg.get('rps', 0) / mono_rps:>8.2f}"
            )
        for route, stats in sorted(runs.get("product", {}).items()):
            if route not in ("Aggregated", ERRORS):
                print(
                    f"{'':>5}   {route:<36} {stats['rps']:>7.1f} req/s  p50 {stats['p50_ms']:.0f}"
                    f"  p95 {stats['p95_ms']:.0f}  p99 {stats['p99_ms']:.0f} ms"
                    f"  err {100 * stats['error_rate']:.2f}%"
                )
    fresh = report.get("freshness_ms")
    if fresh:
        print(
            f"post-to-follower-feed freshness under load: p50 {fresh['p50']} ms, "
            f"p99 {fresh['p99']} ms ({fresh['samples']} samples)"
        )
    hop = report.get("hop_vs_grpc")
    if hop:
        http, direct = hop["http_gateway_handle"], hop["grpc_ingress_direct"]
        print(
            f"GET post: HTTP via gateway + handle {http['requests_per_second']:.0f} req/s "
            f"(p50 {http['p50_ms']:.1f} ms); gRPC ingress direct {direct['rps']:.0f} req/s "
            f"(p50 {direct['p50_ms']:.1f} ms)"
        )
    for side, gc in report.get("gc", {}).items():
        print(
            f"slow GC collections over the whole run, {side}: {gc['slow_collections']} "
            f"(longest {gc['longest_ms']} ms, {gc['longest_cpu_ms']} ms of it on the CPU; "
            f"by generation {gc['by_generation']})"
        )
    print(errors_line(report))


def errors_line(report: dict[str, Any]) -> str:
    """The last line of a run: `errors: none`, or every failed request by target, level and
    kind (HTTP status or exception), so a run with errors says so where it ends."""
    found = [
        f"{target}@{level}: " + ", ".join(f"{kind} x{int(n)}" for kind, n in sorted(kinds.items()))
        for level, runs in report["levels"].items()
        for target, rows in runs.items()
        if (kinds := rows.get(ERRORS))
    ]
    return "errors: none" if not found else "ERRORS: " + "; ".join(found)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2))
