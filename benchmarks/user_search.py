"""User search at a million accounts: the plan Postgres picks and what one page costs.

Fills a scratch Postgres (the local stack's own, migrated) with `--users` accounts (username
`u` + 12 hex characters, display names `<first name> <number>`), then runs the exact query of
dmb.domain.user_search for a few typed prefixes, `--repeat` times each, and prints per prefix
the rows matched, the median and p95 milliseconds of one 20-row page, and the plan's access
path; then the same with index scans turned off, to show what the indexes buy.

Usage: .venv/bin/python benchmarks/user_search.py [--users 1000000] [--repeat 50] [--json F]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from dmb.domain.user_search import SEARCH_SQL, prefix_range, search_parameters  # noqa: E402
from dmb.localstack import LocalStack, scratch_data_dir  # noqa: E402
from dmb.settings import Settings  # noqa: E402
from dmb.stores.migrate import migrate  # noqa: E402

FIRST_NAMES = ["Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Edsger"]
QUERIES = ["u1a2b", "u1a", "u9", "grace 12", "ken", "u"]  # narrow to broad


def fill(conn: psycopg.Connection[Any], users: int) -> float:
    started = time.perf_counter()
    names = "ARRAY[" + ",".join(f"'{name}'" for name in FIRST_NAMES) + "]"
    conn.execute(
        "INSERT INTO users (id, username, email, password_hash, display_name) "
        "SELECT i, 'u' || substr(md5(i::text), 1, 12), 'u' || i || '@example.com', 'x', "
        f"({names})[1 + i %% {len(FIRST_NAMES)}] || ' ' || i "
        "FROM generate_series(1, %s) AS i",
        (users,),
    )
    conn.execute("ANALYZE users")
    return time.perf_counter() - started


def plan_of(conn: psycopg.Connection[Any], params: dict[str, Any]) -> str:
    rows = conn.execute(f"EXPLAIN (COSTS OFF) {SEARCH_SQL}", params).fetchall()
    nodes = [str(row[0]).strip().lstrip("->").strip() for row in rows]
    return " / ".join(node for node in nodes if "Scan" in node or "Bitmap" in node)


def measure(conn: psycopg.Connection[Any], typed: str, repeat: int) -> dict[str, Any]:
    low, high = prefix_range(typed)
    params = search_parameters(low, high, ("", 0), 21)
    matched = conn.execute(
        'SELECT count(*) FROM users WHERE (username COLLATE "C" >= %(low)s '
        'AND username COLLATE "C" < %(high)s) OR (lower(display_name) COLLATE "C" >= %(low)s '
        'AND lower(display_name) COLLATE "C" < %(high)s)',
        params,
    ).fetchone()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        conn.execute(SEARCH_SQL, params).fetchall()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "q": typed,
        "matched": int(matched[0]) if matched else 0,
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2),
        "plan": plan_of(conn, params),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = scratch_data_dir("dmb-search-")
    report: dict[str, Any] = {"users": args.users, "repeat": args.repeat}
    try:
        with LocalStack(Settings(data_dir=folder), with_replica=False) as stack:
            url = stack.resolved_settings().database_url
            assert url is not None
            migrate(url.get_secret_value())
            with psycopg.connect(url.get_secret_value(), autocommit=True) as conn:
                report["fill_seconds"] = round(fill(conn, args.users), 1)
            print(f"{args.users:,} accounts in {report['fill_seconds']} s")
            for label, indexes in (("with indexes", True), ("without index scans", False)):
                # A connection per phase: psycopg prepares a statement after 5 runs (as the
                # service's pool does), and a prepared plan would outlive the SET below.
                with psycopg.connect(url.get_secret_value(), autocommit=True) as conn:
                    if not indexes:
                        conn.execute("SET enable_indexscan = off")
                        conn.execute("SET enable_bitmapscan = off")
                    results = [measure(conn, q, args.repeat) for q in QUERIES]
                print(f"\n{label}:")
                print(f"  {'q':<10} {'matched':>8} {'p50 ms':>8} {'p95 ms':>8}  plan")
                for r in results:
                    print(
                        f"  {r['q']:<10} {r['matched']:>8} {r['p50_ms']:>8} "
                        f"{r['p95_ms']:>8}  {r['plan']}"
                    )
                report[label] = results
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
