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
   PostService through Serve's gRPC ingress, at equal concurrency.
Prints one table, writes JSON and a PNG of latency against load.

    .venv/bin/python benchmarks/e2e.py --levels 8 32 --seconds 20 --out benchmarks/results
    add --ingress default to measure Serve's default proxy instead of the HAProxy ingress.

The rate limiter runs on every request (one Redis round trip) with buckets too large to reject,
so throughput, not the limit, is measured. Figures on a 2-core machine share the cores with the
load generator: compare ratios within one run, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from benchmarks import wrk  # noqa: E402
from benchmarks.ingress import CEILING_APPS, wait_ok  # noqa: E402
from dmb.launcher import LocalSystem  # noqa: E402
from dmb.localstack import scratch_data_dir  # noqa: E402
from dmb.localstack.process import free_port  # noqa: E402
from dmb.seed import SeedPlan, run_seed  # noqa: E402
from dmb.settings import Settings, load_settings  # noqa: E402
from serve_apps.topology import APPLICATIONS  # noqa: E402

LOCUST = str(Path(sys.executable).with_name("locust"))
PASSWORD = "bench-pass-123"  # noqa: S105 - the seeded load-test accounts' password
PREFIX = "bench"
# product: the full mix; feed_only / post_only: one route each (home feed; GET of one post).
TARGETS = ("product", "feed_only", "post_only", "monolith", "hop", "bare")


def run_locust(
    host: str, users: int, seconds: int, locustfile: str, workdir: Path, env: dict[str, str]
) -> dict[str, dict[str, float]]:
    """Run locust headless; per request name: req/s, p50, p95, p99 (ms), error rate."""
    prefix = workdir / f"locust-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            LOCUST,
            "-f",
            locustfile,
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--host",
            host,
            "--csv",
            str(prefix),
            "--only-summary",
            "--stop-timeout",
            "5",
        ],
        env={**os.environ, **env},
        capture_output=True,
        check=False,
        timeout=seconds + 120,
    )
    rows: dict[str, dict[str, float]] = {}
    with open(f"{prefix}_stats.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            count = float(row["Request Count"] or 0)
            rows[row["Name"]] = {
                "requests": count,
                "rps": float(row["Requests/s"] or 0),
                "p50_ms": float(row["50%"] or 0),
                "p95_ms": float(row["95%"] or 0),
                "p99_ms": float(row["99%"] or 0),
                "error_rate": float(row["Failure Count"] or 0) / count if count else 0.0,
            }
    return rows


class FreshnessProbe(threading.Thread):
    """While load runs: an author posts, a follower polls its feed until the post shows up."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.samples: list[float] = []
        self.stop = threading.Event()

    def _account(self) -> tuple[str, dict[str, str]]:
        name = f"probe_{uuid.uuid4().hex[:10]}"
        requests.post(
            f"{self.base}/v1/users",
            json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
            timeout=30,
        )
        login = requests.post(
            f"{self.base}/v1/auth/login", json={"username": name, "password": PASSWORD}, timeout=30
        ).json()
        return login["userId"], {"Authorization": f"Bearer {login['accessToken']}"}

    def run(self) -> None:
        author, author_headers = self._account()
        _, reader_headers = self._account()
        requests.post(f"{self.base}/v1/users/{author}/follow", headers=reader_headers, timeout=30)
        while not self.stop.is_set():
            created = requests.post(
                f"{self.base}/v1/posts",
                json={"content": "fresh?"},
                headers=author_headers,
                timeout=30,
            )
            if created.status_code != 200:
                time.sleep(0.5)
                continue
            post_id = created.json()["post"]["id"]
            started = time.perf_counter()
            while time.perf_counter() - started < 60 and not self.stop.is_set():
                feed = requests.get(
                    f"{self.base}/v1/feed?pageSize=5", headers=reader_headers, timeout=30
                )
                if feed.status_code == 200 and any(
                    p["id"] == post_id for p in feed.json().get("posts", [])
                ):
                    self.samples.append((time.perf_counter() - started) * 1000)
                    break
                time.sleep(0.02)
            time.sleep(0.5)


async def grpc_get_post(
    address: str, token: str, post_id: int, concurrency: int, seconds: float
) -> dict[str, float]:
    import grpc

    from dmb.v1 import posts_pb2, posts_pb2_grpc

    latencies: list[float] = []
    errors = 0
    metadata = (("application", "posts"), ("authorization", f"Bearer {token}"))
    deadline = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        stub = posts_pb2_grpc.PostServiceStub(channel)

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await stub.GetPost(posts_pb2.GetPostRequest(post_id=post_id), metadata=metadata)
                    latencies.append((time.perf_counter() - started) * 1000)
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*[client() for _ in range(concurrency)])
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": latencies[len(latencies) // 2] if latencies else 0.0,
        "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        "errors": float(errors),
    }


def bench_settings(folder: Path) -> Settings:
    return load_settings(
        environ={},
        data_dir=folder,
        http_port=free_port(),
        grpc_port=free_port(),
        jwt_access_ttl_seconds=3600,  # sessions are logged in once, before every run
        rate_limit_ip_capacity=10**9,
        rate_limit_ip_refill_per_sec=10**9,
        rate_limit_user_capacity=10**9,
        rate_limit_user_refill_per_sec=10**9,
        celebrity_threshold=50,
        database_pool_max=20,
    )


def summarize(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    return rows.get("Aggregated", {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--users", type=int, default=300, help="seeded accounts")
    parser.add_argument("--posts", type=int, default=3000, help="seeded posts")
    parser.add_argument("--ingress", choices=["haproxy", "default"], default="haproxy")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    wrk.require()  # the handle-vs-gRPC step needs it: fail now, not after the long runs
    args.out.mkdir(parents=True, exist_ok=True)
    folder = scratch_data_dir("dmb-e2e-")
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "levels": {}}
    load_env = {
        "LOAD_USER_PREFIX": PREFIX,
        "LOAD_USER_COUNT": str(args.users),
        "LOAD_PASSWORD": PASSWORD,
        "LOAD_THINK_SECONDS": "0",  # closed loop, like the ceiling's users: equal concurrency
    }
    try:
        with LocalSystem(
            bench_settings(folder),
            fast_ingress=args.ingress == "haproxy",
            applications=APPLICATIONS + CEILING_APPS,
        ) as system:
            settings = system.resolved
            assert settings is not None
            assert settings.database_url is not None
            base = system.addresses()["http"]
            wait_ok(f"{base}/healthz")
            report["seed"] = seed_graph(settings, args.users, args.posts)
            drained_after = wait_until_feed_pipeline_idle()
            report["seed"]["pipeline_drained_after_s"] = round(drained_after, 1)
            monolith_port = free_port()
            monolith = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "monolith.py"),
                    "--port",
                    str(monolith_port),
                ],
                env={**os.environ, **settings.as_environ()},
            )
            try:
                monolith_base = f"http://127.0.0.1:{monolith_port}"
                wait_ok(f"{monolith_base}/healthz")
                sessions = folder / "sessions.json"
                sessions.write_text(json.dumps(log_in(base, args.users, max(args.levels))))
                load_env["LOAD_SESSIONS"] = str(sessions)
                locustfile = str(ROOT / "benchmarks" / "locustfile.py")
                ceiling = str(ROOT / "benchmarks" / "locust_ceiling.py")
                for level in args.levels:
                    probe = FreshnessProbe(base) if level == max(args.levels) else None
                    if probe:
                        probe.start()
                    product = run_locust(base, level, args.seconds, locustfile, folder, load_env)
                    if probe:
                        probe.stop.set()
                        probe.join(timeout=90)
                        samples = sorted(probe.samples)
                        report["freshness_ms"] = {
                            "samples": len(samples),
                            "p50": statistics.median(samples) if samples else None,
                            "p99": samples[int(len(samples) * 0.99)] if samples else None,
                        }
                    feed_only = run_locust(
                        base,
                        level,
                        args.seconds,
                        locustfile,
                        folder,
                        load_env | {"LOAD_MIX": "feed"},
                    )
                    post_only = run_locust(
                        base,
                        level,
                        args.seconds,
                        locustfile,
                        folder,
                        load_env | {"LOAD_MIX": "post"},
                    )
                    bare = run_locust(
                        base, level, args.seconds, ceiling, folder, {"CEILING_PATH": "/bare"}
                    )
                    hop = run_locust(
                        base, level, args.seconds, ceiling, folder, {"CEILING_PATH": "/hop"}
                    )
                    mono = run_locust(
                        monolith_base, level, args.seconds, locustfile, folder, load_env
                    )
                    report["levels"][level] = {
                        "product": product,
                        "feed_only": feed_only,
                        "post_only": post_only,
                        "bare": bare,
                        "hop": hop,
                        "monolith": mono,
                    }
            finally:
                monolith.terminate()
                monolith.wait(timeout=30)
            report["hop_vs_grpc"] = hop_vs_grpc(base, system, settings, max(args.levels))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_report(report)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"e2e-{stamp}.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / f"e2e-{stamp}.png")
    print(f"wrote {args.out}/e2e-{stamp}.json and .png")
    return 0


def seed_graph(settings: Settings, users: int, posts: int) -> dict[str, Any]:
    """The benchmark's social graph: `users` accounts (two celebrities), `posts` posts."""
    assert settings.database_url is not None
    seeded = run_seed(
        settings.database_url.get_secret_value(),
        SeedPlan(
            users=users,
            posts=posts,
            celebrities=2,
            follows_per_user=10,
            celebrity_threshold=settings.celebrity_threshold,
            username_prefix=PREFIX,
        ),
        PASSWORD,
        show_progress=False,
    )
    return dict(seeded.__dict__)


def wait_until_feed_pipeline_idle(quiet_seconds: float = 10, timeout: float = 600) -> float:
    """Wait until the feed pipeline has worked off the seed's backlog (one event per seeded
    post and follow): measuring while it fans out would charge its CPU to the requests.
    Idle = for `quiet_seconds`, the CDC relay published nothing, the consumer handled nothing
    and no batch was in flight (long enough for the relay to decode the seed's big
    transactions). Returns the seconds waited."""
    import ray

    from actors import cdc_relay, feed_consumer
    from actors.background import NAMESPACE

    relay: Any = ray.get_actor(cdc_relay.NAME, namespace=NAMESPACE)
    consumer: Any = ray.get_actor(feed_consumer.NAME, namespace=NAMESPACE)
    started = time.monotonic()
    last: tuple[int, int] = (-1, -1)
    quiet_since = time.monotonic()
    while time.monotonic() - started < timeout:
        stats = ray.get(consumer.stats.remote())
        now = (ray.get(relay.published.remote()), stats["handled"])
        if now != last or stats["in_flight"]:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_seconds:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"the feed pipeline was still busy after {timeout:.0f} s")


def log_in(base: str, accounts: int, count: int) -> list[dict[str, str]]:
    """`count` distinct seeded accounts' sessions, logged in before any clock starts."""
    sessions = []
    for number in random.Random(7).sample(range(accounts), count):
        username = f"{PREFIX}{number}"
        reply = requests.post(
            f"{base}/v1/auth/login", json={"username": username, "password": PASSWORD}, timeout=60
        )
        reply.raise_for_status()
        body = reply.json()
        sessions.append(
            {"username": username, "userId": body["userId"], "accessToken": body["accessToken"]}
        )
    return sessions


def hop_vs_grpc(base: str, system: LocalSystem, settings: Settings, level: int) -> dict[str, Any]:
    name = f"hop_{uuid.uuid4().hex[:10]}"
    requests.post(
        f"{base}/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
        timeout=30,
    )
    token = requests.post(
        f"{base}/v1/auth/login", json={"username": name, "password": PASSWORD}, timeout=30
    ).json()["accessToken"]
    post = requests.post(
        f"{base}/v1/posts",
        json={"content": "measured"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()["post"]
    url = f"{base}/v1/posts/{post['id']}"
    http = wrk.run(url, connections=level, seconds=10, headers={"Authorization": f"Bearer {token}"})
    grpc_result = asyncio.run(
        grpc_get_post(system.addresses()["grpc"], token, int(post["id"]), level, 10.0)
    )
    return {"http_gateway_handle": http.as_dict(), "grpc_ingress_direct": grpc_result}


def print_report(report: dict[str, Any]) -> None:
    print(
        f"\n{'users':>5} {'target':<10} {'req/s':>8} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'err%':>6} {'vs hop':>7} {'vs mono':>8}"
    )
    for level, runs in report["levels"].items():
        hop_rps = summarize(runs["hop"]).get("rps", 0) or 1
        mono_rps = summarize(runs["monolith"]).get("rps", 0) or 1
        for target in TARGETS:
            agg = summarize(runs[target])
            print(
                f"{level:>5} {target:<10} {agg.get('rps', 0):>8.0f} {agg.get('p50_ms', 0):>7.0f} "
                f"{agg.get('p95_ms', 0):>7.0f} {agg.get('p99_ms', 0):>7.0f} "
                f"{100 * agg.get('error_rate', 0):>6.2f} "
                f"{agg.get('rps', 0) / hop_rps:>7.2f} {agg.get('rps', 0) / mono_rps:>8.2f}"
            )
        for route, stats in sorted(runs["product"].items()):
            if route != "Aggregated":
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


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4))
    levels = sorted(int(level) for level in report["levels"])
    for target in TARGETS:
        aggs = [summarize(report["levels"][level][target]) for level in levels]
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


if __name__ == "__main__":
    sys.exit(main())
