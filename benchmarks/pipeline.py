"""The feed pipeline's sustained throughput: posts committed in Postgres at a set rate, through
the WAL slot, the CDC relay, Kafka, the consumer group and the fan-out pool, into followers'
feeds in Redis; and, in the same run, the ceiling: the same feed writes as raw pipelined ZADDs
from one client.

    .venv/bin/python benchmarks/pipeline.py --out benchmarks/results

On a seeded power-law graph (--users 10,000; one author with --big-author-followers 5,000, who
writes every --big-every'th post; the other posts by authors drawn at random among those with
followers; every feed open, as for active users, so every follower gets a write) and for each
--consumers x --workers combination (the PipelineSupervisor's user_config, applied live) and
each offered --rates: the posts/s and feed writes/s that reached Redis, and commit-to-feed
latency p50/p99, measured at each post's last follower in fan-out order (the last batch). At a
rate above what the pipeline sustains, the delivered rate is its throughput and the latency is
mostly the backlog. Prints a table, writes JSON and a
PNG. Nothing here asserts: it reports what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from benchmarks.harness.system import (  # noqa: E402
    PASSWORD,
    PREFIX,
    bench_settings,
    wait_until_feed_pipeline_idle,
)
from dmb.composition import Components  # noqa: E402
from dmb.domain.feed import feed_key  # noqa: E402
from dmb.localstack import scratch_data_dir  # noqa: E402
from dmb.settings import Settings  # noqa: E402
from dmb.stores.redis import create_redis  # noqa: E402
from entrypoints.launcher import LocalSystem  # noqa: E402
from entrypoints.seed import SeedPlan, run_seed  # noqa: E402


@dataclass
class Graph:
    """Who follows whom, as much as the measurement needs."""

    followers: dict[int, int]  # author -> follower count
    last_follower: dict[int, int]  # author -> the follower fan-out writes to last
    big_author: int
    authors: list[int] = field(default_factory=list)  # everyone with followers


@dataclass
class Run:
    consumers: int
    workers: int
    offered_posts_per_s: float
    posts: int
    delivered: int
    seconds: float
    feed_writes: int
    latencies_ms: list[float]

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "consumers": self.consumers,
            "workers": self.workers,
            "offered_posts_per_s": self.offered_posts_per_s,
            "posts": self.posts,
            "delivered": self.delivered,
            "posts_per_s": self.delivered / self.seconds if self.seconds else 0.0,
            "feed_writes_per_s": self.feed_writes / self.seconds if self.seconds else 0.0,
            "p50_ms": statistics.median(ordered) if ordered else None,
            "p99_ms": ordered[int(len(ordered) * 0.99)] if ordered else None,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--big-author-followers", type=int, default=5_000)
    parser.add_argument("--follows-per-user", type=float, default=5.0)
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[20.0, 200.0],
        help="posts committed per second: one the pipeline keeps up with (latency), one it "
        "cannot (its sustained throughput)",
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="how long posts are written")
    parser.add_argument("--big-every", type=int, default=20)
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = scratch_data_dir("dmb-pipeline-")
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    settings = bench_settings(
        folder,
        celebrity_threshold=10**9,  # every author fanned out: this measures fan-out on write
        fanout_workers=max(args.workers),
        kafka_topic_partitions=max(8, max(args.consumers)),
    )
    try:
        with LocalSystem(settings) as system:
            resolved = system.resolved
            assert resolved is not None
            report["seed"] = seed(resolved, args)
            report["seed"]["pipeline_drained_after_s"] = round(wait_until_feed_pipeline_idle(), 1)
            graph = load_graph(resolved, args.big_author_followers)
            report["feeds_opened"] = asyncio.run(open_feeds(resolved, args.users))
            writes: list[tuple[int, int]] = []  # (author, post) of every post written
            for consumers in args.consumers:
                for workers in args.workers:
                    if workers < consumers:
                        continue
                    configure(system, workers, consumers)
                    for rate in args.rates:
                        run = asyncio.run(
                            measure(resolved, graph, consumers, workers, rate, args, writes)
                        )
                        report["runs"].append(run.summary())
                        print_run(report["runs"][-1])
            report["ceiling"] = asyncio.run(ceiling(resolved, graph, writes))
            report["memory"] = asyncio.run(feed_memory(resolved, graph))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_report(report)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"pipeline-{stamp}.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / f"pipeline-{stamp}.png")
    print(f"wrote {args.out}/pipeline-{stamp}.json and .png")
    return 0


def seed(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """The power-law graph: --users accounts, one of them with --big-author-followers fans."""
    assert settings.database_url is not None
    report = run_seed(
        settings.database_url.get_secret_value(),
        SeedPlan(
            users=args.users,
            posts=0,
            celebrities=1,  # seeded with that many fans; DMB_CELEBRITY_THRESHOLD is far above
            follows_per_user=args.follows_per_user,
            likes_per_post=0,
            comments_per_post=0,
            celebrity_threshold=args.big_author_followers,
            username_prefix=PREFIX,
        ),
        PASSWORD,
        show_progress=False,
    )
    return dict(report.__dict__)


def load_graph(settings: Settings, big_followers: int) -> Graph:
    """Follower counts, and each author's follower with the oldest follow: fan-out pages
    followers newest follow first, so that follower is in the last batch written."""
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        counts: dict[int, int] = dict(
            conn.execute("SELECT followee_id, count(*) FROM follows GROUP BY 1").fetchall()
        )
        last: dict[int, int] = dict(
            conn.execute(
                "SELECT DISTINCT ON (followee_id) followee_id, follower_id FROM follows "
                "ORDER BY followee_id, id"
            ).fetchall()
        )
    big = max(counts, key=lambda author: counts[author])
    assert counts[big] >= big_followers, f"the biggest author has only {counts[big]} followers"
    return Graph(counts, last, big, sorted(counts))


async def open_feeds(settings: Settings, users: int) -> int:
    """Every user's feed set, as after their first read (fan-out writes only reach open feeds)."""
    components = Components(settings)
    await components.ready()
    try:
        async with await psycopg.AsyncConnection.connect(
            settings.database_url.get_secret_value() if settings.database_url else ""
        ) as conn:
            ids = [
                int(row[0]) for row in await (await conn.execute("SELECT id FROM users")).fetchall()
            ]
        opened = 0
        for start in range(0, len(ids), 64):
            results = await asyncio.gather(
                *(components.home_feed.open(user) for user in ids[start : start + 64])
            )
            opened += sum(results)
        return opened
    finally:
        await components.close()


def configure(system: LocalSystem, workers: int, consumers: int) -> None:
    """Resize the pipeline live, as an operator does, and wait for the group to settle."""
    from ray import serve

    config = {"fanout_workers": workers, "feed_consumers": consumers}
    system.reconfigure("pipeline", "PipelineSupervisor", config)
    supervisor = serve.get_deployment_handle("PipelineSupervisor", app_name="pipeline")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stats = supervisor.stats.remote().result()
        if (stats["consumers"], stats["workers"]) == (consumers, workers):
            break
        time.sleep(0.5)
    time.sleep(8)  # the consumer group's rebalance (session timeout 6 s) before the clock starts


async def measure(
    settings: Settings,
    graph: Graph,
    consumers: int,
    workers: int,
    rate: float,
    args: argparse.Namespace,
    writes: list[tuple[int, int]],
) -> Run:
    """Write posts at `rate`; watch each post reach its last follower's feed."""
    assert settings.database_url is not None
    rng = random.Random(consumers * 100 + workers + int(rate))
    redis = create_redis(settings)
    pending: dict[int, tuple[int, float]] = {}  # post -> (author, committed at)
    latencies: list[float] = []
    delivered_writes = 0
    done_writing = asyncio.Event()
    first_commit = last_seen = 0.0

    async def write() -> None:
        nonlocal first_commit
        async with await psycopg.AsyncConnection.connect(
            settings.database_url.get_secret_value() if settings.database_url else "",
            autocommit=True,
        ) as conn:
            count = int(rate * args.seconds)
            started = time.monotonic()
            for i in range(count):
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                author = graph.big_author if i % args.big_every == 0 else rng.choice(graph.authors)
                row = await (
                    await conn.execute(
                        "INSERT INTO posts (author_id, content) VALUES (%s, %s) RETURNING id",
                        (author, f"pipeline {i}"),
                    )
                ).fetchone()
                assert row is not None
                now = time.monotonic()
                first_commit = first_commit or now
                pending[int(row[0])] = (author, now)
                writes.append((author, int(row[0])))
        done_writing.set()

    async def watch() -> None:
        nonlocal last_seen, delivered_writes
        deadline = None
        while not done_writing.is_set() or pending:
            if done_writing.is_set() and deadline is None:
                deadline = time.monotonic() + 120  # the backlog left when writing stopped
            if deadline is not None and time.monotonic() > deadline:
                return
            waiting = list(pending.items())
            async with redis.pipeline(transaction=False) as pipe:
                for post, (author, _) in waiting:
                    pipe.zscore(feed_key(graph.last_follower[author]), str(post))
                scores = await pipe.execute()
            now = time.monotonic()
            for (post, (author, committed)), score in zip(waiting, scores, strict=True):
                if score is not None:
                    latencies.append((now - committed) * 1000)
                    delivered_writes += graph.followers[author]
                    last_seen = now
                    del pending[post]
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(write(), watch())
    finally:
        await redis.aclose()
    posts = int(rate * args.seconds)
    return Run(
        consumers,
        workers,
        rate,
        posts,
        len(latencies),
        max(0.0, last_seen - first_commit),
        delivered_writes,
        latencies,
    )


async def ceiling(
    settings: Settings, graph: Graph, writes: list[tuple[int, int]], most: int = 300_000
) -> dict[str, Any]:
    """The same feed writes as raw ZADDs from one client, 100 per pipelined round trip (the
    batch size), into scratch keys: Redis' own ceiling for them on this machine. The first
    `most` of them: a rate needs no more."""
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        followers: dict[int, list[int]] = {}
        for author, follower in conn.execute(
            "SELECT followee_id, follower_id FROM follows WHERE followee_id = ANY(%s)",
            (list({author for author, _ in writes}),),
        ):
            followers.setdefault(int(author), []).append(int(follower))
    commands = [
        (f"bench:ceiling:{feed_key(follower)}", post)
        for author, post in writes
        for follower in followers.get(author, [])
    ][:most]
    redis: aioredis.Redis = create_redis(settings)
    try:
        started = time.perf_counter()
        for start in range(0, len(commands), 100):
            async with redis.pipeline(transaction=False) as pipe:
                for key, post in commands[start : start + 100]:
                    pipe.zadd(key, {str(post): post})
                await pipe.execute()
        seconds = time.perf_counter() - started
        keys = list({key for key, _ in commands})
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start : start + 1000])
    finally:
        await redis.aclose()
    return {"writes": len(commands), "seconds": seconds, "writes_per_s": len(commands) / seconds}


async def feed_memory(settings: Settings, graph: Graph) -> dict[str, Any]:
    """What a feed costs in Redis, per entry: MEMORY USAGE of the fullest feeds the runs left
    (the big author's followers got the most), for the capacity model (docs/CAPACITY.md)."""
    redis: aioredis.Redis = create_redis(settings)
    try:
        samples = []
        for follower in list(graph.last_follower.values())[:200]:
            key = feed_key(follower)
            entries = int(await redis.zcard(key))
            if entries > 1:
                samples.append((entries, int(await redis.memory_usage(key) or 0)))
        info = await redis.info("memory")
    finally:
        await redis.aclose()
    fullest = max(samples, default=(0, 0))
    return {
        "fullest_feed_entries": fullest[0],
        "fullest_feed_bytes": fullest[1],
        "bytes_per_entry": fullest[1] / fullest[0] if fullest[0] else None,
        "redis_used_memory_bytes": int(info["used_memory"]),
    }


def print_run(run: dict[str, Any]) -> None:
    p50 = f"{run['p50_ms']:.0f}" if run["p50_ms"] is not None else "-"
    p99 = f"{run['p99_ms']:.0f}" if run["p99_ms"] is not None else "-"
    print(
        f"consumers {run['consumers']} workers {run['workers']}: "
        f"{run['delivered']}/{run['posts']} posts, {run['posts_per_s']:.1f} posts/s, "
        f"{run['feed_writes_per_s']:.0f} feed writes/s, p50 {p50} ms, p99 {p99} ms",
        flush=True,
    )


def print_report(report: dict[str, Any]) -> None:
    ceiling_rate = report["ceiling"]["writes_per_s"]
    print(
        f"\n{'consumers':>9} {'workers':>7} {'offered':>8} {'posts/s':>8} {'writes/s':>9} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'vs ceiling':>10}"
    )
    for run in report["runs"]:
        p50 = f"{run['p50_ms']:.0f}" if run["p50_ms"] is not None else "-"
        p99 = f"{run['p99_ms']:.0f}" if run["p99_ms"] is not None else "-"
        print(
            f"{run['consumers']:>9} {run['workers']:>7} {run['offered_posts_per_s']:>8.1f} "
            f"{run['posts_per_s']:>8.1f} {run['feed_writes_per_s']:>9.0f} {p50:>7} {p99:>7} "
            f"{run['feed_writes_per_s'] / ceiling_rate:>10.2f}"
        )
    print(
        f"ceiling: {report['ceiling']['writes']} raw pipelined ZADDs from one client, "
        f"{ceiling_rate:.0f} writes/s"
    )
    memory = report["memory"]
    print(
        f"memory: the fullest feed holds {memory['fullest_feed_entries']} entries in "
        f"{memory['fullest_feed_bytes']} bytes ({memory['bytes_per_entry'] or 0:.0f} bytes/entry)"
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    labels = [f"{r['consumers']}c/{r['workers']}w" for r in runs]
    figure, (writes, latency) = plt.subplots(1, 2, figsize=(11, 4))
    writes.bar(labels, [r["feed_writes_per_s"] for r in runs], label="pipeline")
    writes.axhline(report["ceiling"]["writes_per_s"], color="red", linestyle="--", label="ceiling")
    writes.set(ylabel="feed writes/s", title="Feed writes reaching Redis")
    writes.legend(fontsize=7)
    latency.bar(labels, [r["p50_ms"] or 0 for r in runs], label="p50")
    latency.bar(labels, [r["p99_ms"] or 0 for r in runs], alpha=0.4, label="p99")
    latency.set(ylabel="ms", title="Commit to last follower's feed")
    latency.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
