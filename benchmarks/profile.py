"""Where a request spends its time: py-spy on every process of the request path under load.

Starts the same system as benchmarks/e2e.py (HAProxy ingress, seeded graph, sessions logged in
first), puts one locust mix on it (`--mix feed` by default: home-feed reads only) and, while it
runs, samples the Gateway replica, the service replica behind it, and Postgres/Redis CPU time.
Prints, per Python process, the share of samples by where the frame on top belongs (our code,
Ray, the Redis and Postgres clients, protobuf, asyncio, the rest), the busiest functions, and
each process's CPU seconds, so the cost of a request can be split between ours and Ray's.

    .venv/bin/python benchmarks/profile.py --mix feed --users 16 --seconds 20
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from benchmarks.harness.locust import run_locust  # noqa: E402
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
from dmb.localstack import scratch_data_dir  # noqa: E402
from entrypoints.launcher import LocalSystem  # noqa: E402

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
SERVICE_OF_MIX = {"feed": "FeedService", "post": "PostService", "full": "FeedService"}
# Where a sampled frame belongs, by the file py-spy names for it (first match wins).
OWNERS = [
    ("ours", ("dmb/", "serve_apps/", "actors/")),
    ("ray", ("ray/",)),
    ("native thread (Ray core, gRPC)", ("threading.py",)),
    ("grpc", ("grpc/",)),
    ("jwt + crypto", ("jwt/", "cryptography/")),
    ("redis client", ("redis/",)),
    ("postgres client", ("psycopg",)),
    ("protobuf", ("google/protobuf/",)),
    ("http server", ("starlette/", "uvicorn/", "h11/", "httptools/")),
    ("asyncio", ("asyncio/", "uvloop/")),
]


def owner(frame: str) -> str:
    """`function (path/file.py:line)` -> the owner of path/file.py."""
    where = frame.rpartition("(")[2]
    for name, prefixes in OWNERS:
        if any(where.startswith(prefix) or f"/{prefix}" in where for prefix in prefixes):
            return name
    return "other"


def replica_pids(deployments: list[str]) -> dict[str, int]:
    """Serve replicas by their process title, `ray::ServeReplica:<app>:<deployment>` (Ray's
    state API would need the dashboard, which the local system does not run)."""
    found: dict[str, int] = {}
    for process in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(process.info["cmdline"] or [])
        for deployment in deployments:
            if "ServeReplica:" in title and title.split()[0].endswith(f":{deployment}"):
                found[deployment] = int(process.info["pid"])
    return found


def summarize(raw: Path, top: int) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks -> shares by owner of the top frame, busiest functions."""
    by_owner: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    ours_inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        by_owner[owner(frames[-1])] += count
        by_function[frames[-1]] += count
        for frame in set(frames):
            if owner(frame) == "ours":
                ours_inclusive[frame] += count
    return {
        "samples": total,
        "by_owner": {name: count / total for name, count in by_owner.most_common()}
        if total
        else {},
        "top_self": [(f, c / total) for f, c in by_function.most_common(top)] if total else [],
        "top_ours_inclusive": [(f, c / total) for f, c in ours_inclusive.most_common(top)]
        if total
        else [],
    }


# Every other process's CPU time lands in the first group whose marker is in its command line,
# so the table says what runs on the cores besides the two replicas of the request path.
GROUPS = [
    ("other Serve replicas of ours (posts, users, ...)", ("ServeReplica:",)),
    (
        "feed pipeline (relay, consumers, fan-out, flusher, broker)",
        (
            "CdcRelay",
            "FeedConsumer",
            "NotificationConsumer",
            "FanoutWorker",
            "CounterFlusher",
            "tansu",
        ),
    ),
    ("postgres + redis", ("postgres", "redis-server")),
    ("locust (load generator)", ("locust",)),
    ("haproxy", ("haproxy",)),
    (
        "Ray's own processes (raylet, GCS, controller, agents)",
        ("ray::", "raylet", "gcs_server", "ray/dashboard", "ray/_private", "ray/autoscaler"),
    ),
    ("this script and py-spy (the sampler)", ("benchmarks/profile.py",)),
]
Snapshot = dict[int, tuple[str, float]]  # pid -> (command line, CPU seconds so far)


def snapshot() -> Snapshot:
    """Every process's CPU seconds (its own, and its reaped children's: Postgres backends)."""
    taken: Snapshot = {}
    for process in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        times = process.info["cpu_times"]
        if times is not None:
            seconds = times.user + times.system + times.children_user
            taken[int(process.info["pid"])] = (" ".join(process.info["cmdline"] or []), seconds)
    return taken


def cpu_report(
    before: Snapshot, after: Snapshot, replicas: dict[str, int], top: int
) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """CPU seconds spent between two snapshots: per replica, per group, and the heaviest."""
    spent = {pid: (line, sec - before.get(pid, ("", 0.0))[1]) for pid, (line, sec) in after.items()}
    by_name = {name: spent.get(pid, ("", 0.0))[1] for name, pid in replicas.items()}
    by_name.update({name: 0.0 for name, _ in GROUPS})
    named = set(replicas.values())
    for pid, (line, sec) in spent.items():
        group = next((name for name, marks in GROUPS if any(m in line for m in marks)), None)
        if pid not in named and group is not None:
            by_name[group] += sec
    heaviest = sorted(((sec, line[:70]) for line, sec in spent.values()), reverse=True)[:top]
    return by_name, heaviest


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(times.user + times.system + times.nice + times.irq + times.softirq)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mix", choices=["feed", "post", "full"], default="feed")
    parser.add_argument("--users", type=int, default=16, help="concurrent locust users")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--rate",
        type=int,
        default=200,
        help="py-spy samples per second; 0 samples nothing and reports CPU time alone, "
        "without the sampler's own cost on the cores",
    )
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--json", type=Path)
    add_setting_option(parser)
    args = parser.parse_args()
    folder = scratch_data_dir("dmb-profile-")
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        with LocalSystem(
            bench_settings(folder, **setting_overrides(args.setting)), fast_ingress=True
        ) as system:
            settings = system.resolved
            assert settings is not None
            base = system.addresses()["http"]
            wait_ok(f"{base}/healthz")
            seed_graph(settings, 300, 3000)
            wait_until_feed_pipeline_idle()
            sessions = folder / "sessions.json"
            sessions.write_text(json.dumps(log_in(base, 300, args.users)))
            load_env = {
                "LOAD_USER_PREFIX": PREFIX,
                "LOAD_USER_COUNT": "300",
                "LOAD_PASSWORD": PASSWORD,
                "LOAD_THINK_SECONDS": "0",
                "LOAD_SESSIONS": str(sessions),
                "LOAD_MIX": args.mix,
            }
            deployments = ["Gateway", SERVICE_OF_MIX[args.mix]]
            pids = replica_pids(deployments)
            locust_result: dict[str, Any] = {}
            runner = threading.Thread(
                target=lambda: locust_result.update(
                    run_locust(
                        base,
                        args.users,
                        args.seconds + 6,
                        "benchmarks/locustfile.py",
                        folder,
                        load_env,
                    )
                )
            )
            runner.start()
            time.sleep(4)  # past the ramp-up
            before = snapshot()
            busy_before = machine_busy_seconds()
            spies = {
                name: subprocess.Popen(
                    [
                        PY_SPY,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(args.seconds),
                        "--rate",
                        str(args.rate),
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--output",
                        str(folder / f"{name}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for name, pid in pids.items()
                if args.rate > 0
            }
            for spy in spies.values():
                spy.wait(timeout=args.seconds + 60)
            if not spies:
                time.sleep(args.seconds)
            busy = machine_busy_seconds() - busy_before
            spent, heaviest = cpu_report(before, snapshot(), pids, args.top)
            runner.join(timeout=args.seconds + 180)
            report["locust"] = locust_result.get("Aggregated", {})
            report["cpu_seconds"] = {name: round(sec, 2) for name, sec in spent.items()}
            report["cpu_seconds"]["everything else (kernel, short-lived processes)"] = round(
                busy - sum(report["cpu_seconds"].values()), 2
            )
            report["cpu_seconds_machine"] = round(busy, 2)
            report["heaviest_processes"] = [(round(sec, 2), title) for sec, title in heaviest]
            report["profiles"] = {
                name: summarize(folder / f"{name}.txt", args.top) for name in spies
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_report(report, args.seconds)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def print_report(report: dict[str, Any], seconds: int) -> None:
    agg = report["locust"]
    print(
        f"load: {agg.get('rps', 0):.0f} req/s, p50 {agg.get('p50_ms', 0):.0f} ms, "
        f"p99 {agg.get('p99_ms', 0):.0f} ms, errors {100 * agg.get('error_rate', 0):.2f}%"
    )
    print(
        f"CPU seconds over the {seconds} s sampled (2 cores: {2 * seconds} s available, "
        f"{report['cpu_seconds_machine']:.1f} s busy):"
    )
    for name, value in report["cpu_seconds"].items():
        print(f"  {name:<54} {value:6.1f}")
    print("heaviest processes:")
    for value, title in report["heaviest_processes"]:
        print(f"  {value:6.1f}  {title}")
    for name, profile in report["profiles"].items():
        print(f"\n{name}: {profile['samples']} samples; top frame belongs to:")
        for part, share in profile["by_owner"].items():
            print(f"  {part:<20} {100 * share:5.1f}%")
        print("  busiest functions (self):")
        for function, share in profile["top_self"]:
            print(f"    {100 * share:5.1f}%  {function[:110]}")
        print("  our code (inclusive):")
        for function, share in profile["top_ours_inclusive"]:
            print(f"    {100 * share:5.1f}%  {function[:110]}")


if __name__ == "__main__":
    sys.exit(main())
