"""Chaos run (issue 12): the locust mix for a bounded time while faults hit the system at random
moments, then a check that nothing acknowledged was lost.

On one local system (stores + Ray + every Serve app), seeded with a social graph:
1. runs benchmarks/locustfile.py (the DeathStarBench-like mix) headless for `--seconds`, each
   acknowledged post, follow, like and comment recorded (LOAD_RECORD);
2. meanwhile injects every fault of benchmarks/harness/faults.py `--rounds` times, at moments a
   seeded RNG picks in the first 70% of the run: kill a Serve replica, the CDC relay, a feed
   consumer, a fan-out worker; restart the broker (loses its data), Redis (loses its data) and
   the Postgres primary (keeps it);
3. once the load is over, checks (benchmarks/harness/verify.py): every acknowledged write is in
   Postgres; new posts still reach their followers' feeds by fan-out; every seeded account's home
   feed is exactly its followees' posts, newest first; the touched posts' counts, in the API and
   in the flushed columns, are their rows' counts.
Prints the faults injected, requests, errors by status and `lost: N`; writes JSON; exits 1 when
anything was lost, a feed or a counter differs, or a fault could not be injected.

    .venv/bin/python benchmarks/chaos.py --seconds 120 --seed 12

tests/integration/test_chaos.py runs a short version of this same script.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import verify  # noqa: E402
from benchmarks.harness.faults import Faults, Injected, inject, schedule  # noqa: E402
from benchmarks.harness.locust import ERRORS, Rows, aggregated, run_locust  # noqa: E402
from benchmarks.harness.system import (  # noqa: E402
    PASSWORD,
    PREFIX,
    bench_settings,
    log_in,
    seed_graph,
    wait_ok,
    wait_until_feed_pipeline_idle,
)
from dmb.localstack import scratch_data_dir  # noqa: E402
from dmb.settings import Settings  # noqa: E402
from entrypoints.launcher import LocalSystem  # noqa: E402

LOCUSTFILE = str(ROOT / "benchmarks" / "locustfile.py")
DELIVERY_PROBES = 32  # authors that post after the load: a few per partition


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=120, help="how long the load runs")
    parser.add_argument("--seed", type=int, default=12, help="of the faults' RNG")
    parser.add_argument("--rounds", type=int, default=1, help="times each fault is injected")
    parser.add_argument("--users", type=int, default=16, help="concurrent locust users")
    parser.add_argument("--think", type=float, default=0.1, help="max pause between requests")
    parser.add_argument("--accounts", type=int, default=300, help="seeded accounts")
    parser.add_argument("--posts", type=int, default=3000, help="seeded posts")
    parser.add_argument("--outage", type=float, nargs=2, default=[1.0, 5.0], metavar=("MIN", "MAX"))
    parser.add_argument("--settle", type=float, default=180, help="max seconds to converge")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "chaos.json")
    args = parser.parse_args(argv)
    folder = scratch_data_dir("dmb-chaos-")
    try:
        # Feeds longer than any seeded one: the check compares whole feeds, never trimmed ones.
        with LocalSystem(bench_settings(folder, feed_max_length=100_000)) as system:
            report = run(system, folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0 if report["ok"] else 1


def run(system: LocalSystem, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    settings = system.resolved
    assert settings is not None
    base = system.addresses()["http"]
    wait_ok(f"{base}/healthz")
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    report["seed"] = seed_graph(settings, args.accounts, args.posts)
    wait_until_feed_pipeline_idle(quiet_seconds=5)
    sessions = folder / "sessions.json"
    sessions.write_text(json.dumps(log_in(base, args.accounts, args.users)))
    record = folder / "acknowledged.jsonl"
    load_env = {
        "LOAD_USER_PREFIX": PREFIX,
        "LOAD_USER_COUNT": str(args.accounts),
        "LOAD_PASSWORD": PASSWORD,
        "LOAD_THINK_SECONDS": str(args.think),
        "LOAD_SESSIONS": str(sessions),
        "LOAD_RECORD": str(record),
        # A mute changes what a home feed shows, which the feed check compares with followees.
        "LOAD_SKIP": "mute_and_unmute",
    }

    rows: Rows = {}

    def load() -> None:
        rows.update(run_locust(base, args.users, args.seconds, LOCUSTFILE, folder, load_env))

    rng = random.Random(args.seed)
    plan = schedule(rng, args.seconds, args.rounds)
    faults = Faults(system, rng, (args.outage[0], args.outage[1]))
    print(f"chaos: {args.seconds} s of load, {len(plan)} faults (seed {args.seed})")
    locust = threading.Thread(target=load, name="locust", daemon=True)
    started = time.monotonic()
    locust.start()
    injected = inject(faults, plan, started, stop=lambda: not locust.is_alive())
    locust.join()
    report["faults"] = [fault.as_dict() for fault in injected]
    report["load"] = {"requests": aggregated(rows), "errors": rows.get(ERRORS, {})}
    report.update(check(settings, record, args))
    report["ok"] = ok(report, injected, len(plan))
    return report


def check(settings: Settings, record: Path, args: argparse.Namespace) -> dict[str, Any]:
    """After the load: let the pipeline settle, then compare everything with Postgres."""
    assert settings.database_url is not None
    assert settings.redis_url is not None
    database_url = settings.database_url.get_secret_value()
    redis_url = settings.redis_url.get_secret_value()
    found: dict[str, Any] = {}
    print("load over: waiting for the pipeline to settle, then checking against Postgres")
    try:
        found["settled_s"] = round(wait_until_feed_pipeline_idle(5, timeout=args.settle), 1)
    except RuntimeError:
        found["settled_s"] = None  # still busy: the checks below wait for what they need
    acknowledged = verify.Acknowledged.read(record)
    found["acknowledged"] = acknowledged.counts()
    found["lost"] = verify.lost(database_url, acknowledged)
    accounts = seeded_accounts(database_url)
    pairs = verify.open_pairs(database_url, accounts, settings.celebrity_threshold, DELIVERY_PROBES)
    arrived, waited = verify.delivered_by_fanout(
        pairs, verify.in_redis_feed(redis_url), args.settle
    )
    found["delivered"] = {"posts": len(pairs), "arrived": arrived, "waited_s": round(waited, 1)}
    diff, waited = verify.feeds_converge(database_url, accounts, args.settle)
    found["feeds"] = {"checked": len(accounts), **diff.as_dict(), "waited_s": round(waited, 1)}
    touched = sorted(acknowledged.touched_posts())
    found["counters"] = verify.counters_agree(database_url, touched, accounts[0], 60)
    return found


def seeded_accounts(database_url: str) -> list[int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id FROM users WHERE username LIKE %s ORDER BY id", (f"{PREFIX}%",)
        ).fetchall()
    return [int(row[0]) for row in rows]


def ok(report: dict[str, Any], injected: list[Injected], planned: int) -> bool:
    faults_ok = len(injected) == planned and not any(
        fault.detail.startswith(("failed", "skipped")) for fault in injected
    )
    return (
        faults_ok
        and sum(report["lost"].values()) == 0
        and report["delivered"]["arrived"] == report["delivered"]["posts"]
        and report["feeds"]["feeds"] == 0
        and report["counters"]["api_differ"] == 0
        and report["counters"]["columns_differ"] == 0
    )


def print_report(report: dict[str, Any]) -> None:
    faults = report["faults"]
    print(f"\nfaults injected ({len(faults)}):")
    for fault in faults:
        print(f"  t={fault['at_s']:6.1f}s  {fault['fault']:<14} {fault['detail']}")
    total = report["load"]["requests"]
    errors = report["load"]["errors"]
    by_status = ", ".join(f"{kind} x{int(n)}" for kind, n in sorted(errors.items())) or "none"
    print(
        f"requests: {int(total.get('requests', 0))} ({total.get('rps', 0):.0f} req/s, "
        f"p50 {total.get('p50_ms', 0):.0f} ms, p99 {total.get('p99_ms', 0):.0f} ms)"
    )
    print(f"errors by status: {by_status}")
    acknowledged = report["acknowledged"]
    print("acknowledged: " + ", ".join(f"{k} {v}" for k, v in acknowledged.items()))
    lost = report["lost"]
    detail = ", ".join(f"{k} {v}" for k, v in lost.items() if v)
    print(f"lost: {sum(lost.values())}" + (f" ({detail})" if detail else ""))
    delivered = report["delivered"]
    print(
        f"delivered by fan-out after the faults: {delivered['arrived']}/{delivered['posts']} "
        f"posts in {delivered['waited_s']} s"
    )
    feeds = report["feeds"]
    print(
        f"home feeds: {feeds['checked']} checked, {feeds['feeds']} differ "
        f"({feeds['missing_posts']} posts missing, {feeds['extra']} extra) "
        f"after {feeds['waited_s']} s"
    )
    counters = report["counters"]
    print(
        f"counters: {counters['posts']} touched posts, API differs on {counters['api_differ']}, "
        f"flushed columns differ on {counters['columns_differ']}"
    )
    print("chaos: OK" if report["ok"] else "chaos: FAILED")


if __name__ == "__main__":
    sys.exit(main())
