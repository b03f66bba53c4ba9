"""Headless locust runs, read back from locust's CSV summaries."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from pathlib import Path

LOCUST = str(Path(sys.executable).with_name("locust"))
Rows = dict[str, dict[str, float]]


def run_locust(
    host: str, users: int, seconds: int, locustfile: str, workdir: Path, env: dict[str, str]
) -> Rows:
    """Run locust headless (closed loop); per request name: requests, req/s, p50, p95, p99
    (ms), error rate."""
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
    rows: Rows = {}
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


def aggregated(rows: Rows) -> dict[str, float]:
    """The run's totals over every request name."""
    return rows.get("Aggregated", {})
