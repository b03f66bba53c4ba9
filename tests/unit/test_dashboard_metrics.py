"""Every metric the Grafana dashboard queries is one that something exports: a panel over a
misspelt or renamed series shows "No data" and nobody notices until an incident."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "cluster" / "base" / "dashboards" / "dmb.json"
SOURCES = ("actors", "serve_apps", "dmb", "entrypoints")
# Ray's export (ray/_private/metrics_agent.py) names a series `ray_<name>`; Prometheus adds
# `_total` to a counter not already so named, and a histogram is read as _bucket/_sum/_count.
_SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}
# Ray Serve's own series the dashboard reads (Serve builds these names with f-strings, e.g.
# ray/serve/_private/request_ingress_metrics.py, so they are listed rather than parsed).
RAY_SERIES = {
    "ray_serve_num_http_requests_total",
    "ray_serve_deployment_processing_latency_ms_bucket",
}
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NOT_METRICS = {"sum", "rate", "max", "min", "avg", "by", "without", "le", "histogram_quantile"}


def _exprs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def _queried(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside label matchers, `by (..)`
    groupings and range selectors that are not functions or keywords."""
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|(?:by|without)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\"[^\"]*\"", " ", expr)
    return {n for n in _NAME.findall(expr) if n not in _NOT_METRICS and not n[0].isdigit()}


def registered() -> set[str]:
    """Exported names of every ray.util.metrics Counter/Gauge/Histogram our code creates."""
    names: set[str] = set()
    for top in SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                kind = getattr(node.func, "id", getattr(node.func, "attr", None))
                if kind not in _SUFFIXES or not node.args:
                    continue
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    base = "ray_" + first.value
                    for suffix in _SUFFIXES[kind]:
                        names.add(base if base.endswith(suffix) else base + suffix)
    return names


def test_dashboard_queries_only_exported_metrics() -> None:
    exprs = list(_exprs(json.loads(DASHBOARD.read_text())))
    assert exprs, "the dashboard has no queries"
    known = registered() | RAY_SERIES
    for expr in exprs:
        names = _queried(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= known, f"{expr!r} queries {sorted(names - known)}, which nothing exports"


def test_our_metrics_are_found_in_the_source() -> None:
    assert {"ray_dmb_cdc_lag_seconds", "ray_dmb_fanout_batches_total"} <= registered()
