"""Serve ingress ceiling: bare deployment and ingress + one handle hop, default vs HAProxy ingress.

Usage: .venv/bin/python benchmarks/ingress.py [--seconds 5] [--connections 32] [--json out.json]
Each configuration starts its own local system (stores, Ray, the two ceiling apps), warms up,
and measures with wrk. Prints a table; figures on a 2-core machine are noisy (±30%).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import wrk  # noqa: E402
from benchmarks.harness.system import wait_ok  # noqa: E402
from dmb.localstack import scratch_data_dir  # noqa: E402
from dmb.localstack.process import free_port  # noqa: E402
from dmb.settings import load_settings  # noqa: E402
from entrypoints.launcher import LocalSystem  # noqa: E402
from serve_apps.topology import AppSpec  # noqa: E402

CEILING_APPS = (
    AppSpec("ceiling-bare", "benchmarks.ceiling_apps:build_bare", "/bare"),
    AppSpec("ceiling-hop", "benchmarks.ceiling_apps:build_hop", "/hop"),
)


def measure(fast: bool, seconds: int, connections: int) -> list[dict[str, Any]]:
    folder = scratch_data_dir("dmb-bench-")
    settings = load_settings(
        environ={}, data_dir=folder, http_port=free_port(), grpc_port=free_port()
    )
    rows = []
    try:
        with LocalSystem(
            settings,
            with_replica=False,
            fast_unsafe=True,
            fast_ingress=fast,
            applications=CEILING_APPS,
        ) as system:
            base = system.addresses()["http"]
            for path in ("/bare", "/hop"):
                wait_ok(base + path)
                wrk.run(base + path, connections, 2)  # warm-up
                result = wrk.run(base + path, connections, seconds)
                rows.append(
                    {"ingress": "haproxy" if fast else "default", "path": path, **result.as_dict()}
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    wrk.require()
    rows = measure(False, args.seconds, args.connections) + measure(
        True, args.seconds, args.connections
    )
    print(f"{'ingress':<9} {'path':<6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for row in rows:
        print(
            f"{row['ingress']:<9} {row['path']:<6} {row['requests_per_second']:>9.0f} "
            f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['errors']:>7}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
