"""End-to-end benchmark: the product under locust next to Serve's own ceiling and a monolith.

In one run, on one local system (stores + Ray + every Serve app + the ceiling apps):
1. seeds a social graph, then runs benchmarks/locustfile.py (DeathStarBench-like mix, through
   the HTTP gateway only) headless at each user count for a bounded time;
2. runs the same user counts against Serve's ceiling: a bare deployment, and an ingress making
   one DeploymentHandle call (the shape of every request of ours);
   and, for the per-route targets, only home-feed reads and only authenticated GETs of a post;
3. runs the same mix against the monolith baseline (benchmarks/monolith.py: the same gateway
   core and domain code in one ASGI process, no Ray) on the same stores;
4. measures post-to-follower-feed freshness while the product is under load;
5. compares one handle hop (HTTP -> gateway -> PostService) with a direct gRPC call to the
   PostService through Serve's gRPC ingress, at equal concurrency;
6. counts the slow garbage collections our processes reported over the run (dmb.gc_pauses).
Prints one table, writes JSON and a PNG of latency against load.

    .venv/bin/python benchmarks/e2e.py --levels 8 32 --seconds 20 --out benchmarks/results
    add --ingress default to measure Serve's default proxy instead of the HAProxy ingress.

This file is the runner; the system, locust, the probes, the table and the plot are in
benchmarks/harness/.

The rate limiter runs on every request (one Redis round trip) with buckets too large to reject,
so throughput, not the limit, is measured. Figures on a 2-core machine share the cores with the
load generator: compare ratios within one run, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import wrk  # noqa: E402
from benchmarks.harness.gc_report import ray_worker_logs, slow_collections_in  # noqa: E402
from benchmarks.harness.locust import Rows, run_locust  # noqa: E402
from benchmarks.harness.plot import plot  # noqa: E402
from benchmarks.harness.probes import FreshnessProbe, hop_vs_grpc  # noqa: E402
from benchmarks.harness.report import TARGETS, print_report, write_json  # noqa: E402
from benchmarks.harness.system import (  # noqa: E402
    PASSWORD,
    PREFIX,
    add_setting_option,
    bench_settings,
    log_in,
    seed_graph,
    setting_overrides,
    wait_ok,
    wait_until_feed_pipeline_idle,
)
from benchmarks.ingress import CEILING_APPS  # noqa: E402
from dmb.localstack import scratch_data_dir  # noqa: E402
from dmb.localstack.process import free_port  # noqa: E402
from entrypoints.launcher import LocalSystem  # noqa: E402
from serve_apps.topology import APPLICATIONS  # noqa: E402

LOCUSTFILE = str(ROOT / "benchmarks" / "locustfile.py")
CEILING = str(ROOT / "benchmarks" / "locust_ceiling.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--users", type=int, default=300, help="seeded accounts")
    parser.add_argument("--posts", type=int, default=3000, help="seeded posts")
    parser.add_argument("--ingress", choices=["haproxy", "default"], default="haproxy")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add_setting_option(parser)
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=TARGETS,
        default=list(TARGETS),
        help="a subset, for a quicker A/B (the ratios need hop and monolith)",
    )
    args = parser.parse_args()
    wrk.require()  # the handle-vs-gRPC step needs it: fail now, not after the long runs
    args.out.mkdir(parents=True, exist_ok=True)
    folder = scratch_data_dir("dmb-e2e-")
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "levels": {}}
    try:
        with LocalSystem(
            bench_settings(folder, **setting_overrides(args.setting)),
            fast_ingress=args.ingress == "haproxy",
            applications=APPLICATIONS + CEILING_APPS,
        ) as system:
            report.update(measure(system, folder, args))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_report(report)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    write_json(report, args.out / f"e2e-{stamp}.json")
    plot(report, args.out / f"e2e-{stamp}.png")
    print(f"wrote {args.out}/e2e-{stamp}.json and .png")
    return 0


def measure(system: LocalSystem, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Seed, drain the pipeline, start the monolith, then every target at every level."""
    settings = system.resolved
    assert settings is not None
    base = system.addresses()["http"]
    wait_ok(f"{base}/healthz")
    found: dict[str, Any] = {"seed": seed_graph(settings, args.users, args.posts), "levels": {}}
    found["seed"]["pipeline_drained_after_s"] = round(wait_until_feed_pipeline_idle(), 1)
    sessions = folder / "sessions.json"
    sessions.write_text(json.dumps(log_in(base, args.users, max(args.levels))))
    load_env = {
        "LOAD_USER_PREFIX": PREFIX,
        "LOAD_USER_COUNT": str(args.users),
        "LOAD_PASSWORD": PASSWORD,
        "LOAD_THINK_SECONDS": "0",  # closed loop, like the ceiling's users: equal concurrency
        "LOAD_SESSIONS": str(sessions),
    }
    monolith_port = free_port()
    monolith_log = folder / "monolith.log"
    monolith = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "monolith.py"), "--port", str(monolith_port)],
        env={**os.environ, **settings.as_environ()},
        stderr=monolith_log.open("w"),
    )
    try:
        monolith_base = f"http://127.0.0.1:{monolith_port}"
        try:
            wait_ok(f"{monolith_base}/healthz")
        except RuntimeError:  # its log is in the scratch folder, which goes at the end
            print(monolith_log.read_text()[-4000:], file=sys.stderr)
            raise
        for level in args.levels:
            probe = FreshnessProbe(base) if level == max(args.levels) else None
            found["levels"][level] = run_level(
                system, monolith_base, level, args, folder, load_env, probe
            )
            if probe:
                found["freshness_ms"] = probe.summary()
    finally:
        monolith.terminate()
        monolith.wait(timeout=30)
    found["hop_vs_grpc"] = hop_vs_grpc(base, system.addresses()["grpc"], max(args.levels))
    found["gc"] = {
        "product": slow_collections_in(ray_worker_logs()),
        "monolith": slow_collections_in([monolith_log]),
    }
    return found


def run_level(
    system: LocalSystem,
    monolith_base: str,
    level: int,
    args: argparse.Namespace,
    folder: Path,
    load_env: dict[str, str],
    probe: FreshnessProbe | None,
) -> dict[str, Rows]:
    """One load level: the product's mix (with the freshness probe beside it), the same mix
    with the gateway's coalescing switched off live, its two single-route mixes, Serve's
    ceilings, and the monolith."""
    base = system.addresses()["http"]
    seconds = args.seconds
    found: dict[str, Rows] = {}
    if "product" in args.targets:
        if probe:
            probe.start()
        found["product"] = run_locust(base, level, seconds, LOCUSTFILE, folder, load_env)
        if probe:
            probe.stop.set()
            probe.join(timeout=90)
    if "product_direct" in args.targets:
        gateway_coalescing(system, {"coalesce_in_flight": 0})
        try:
            found["product_direct"] = run_locust(base, level, seconds, LOCUSTFILE, folder, load_env)
        finally:
            gateway_coalescing(system, {})
    mixes = {"feed_only": "feed", "post_only": "post"}
    for target, mix in mixes.items():
        if target in args.targets:
            env = load_env | {"LOAD_MIX": mix}
            found[target] = run_locust(base, level, seconds, LOCUSTFILE, folder, env)
    for target in ("bare", "hop"):
        if target in args.targets:
            env = {"CEILING_PATH": f"/{target}"}
            found[target] = run_locust(base, level, seconds, CEILING, folder, env)
    if "monolith" in args.targets:
        found["monolith"] = run_locust(monolith_base, level, seconds, LOCUSTFILE, folder, load_env)
    return found


def gateway_coalescing(system: LocalSystem, config: dict[str, int]) -> None:
    """The Gateway's live `user_config` (serve_apps/gateway/app.py): {} is the settings'."""
    system.reconfigure("gateway", "Gateway", config)
    time.sleep(2)  # the replica reconfigures once the controller has the new config


if __name__ == "__main__":
    sys.exit(main())
