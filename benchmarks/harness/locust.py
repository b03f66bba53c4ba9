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
    (ms), error rate; and under ERRORS, the failed requests by HTTP status or exception."""
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
    rows[ERRORS] = failures_by_kind(Path(f"{prefix}_failures.csv"))
    return rows


ERRORS = "Errors"  # the key of the failures' breakdown in a run's rows
_WRAPPED = "CatchResponseError("


def failures_by_kind(path: Path) -> dict[str, float]:
    """locust's failures file, counted by kind: `HTTP 503` for a status the locustfile marked
    as failed (its messages start with the status), else the exception's class name."""
    kinds: dict[str, float] = {}
    if not path.exists():
        return kinds
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            error = row["Error"].strip()
            # locust 2.x writes a failure marked with a message as the repr of the exception it
            # wraps it in: CatchResponseError('503: ...'). The message is what we classify.
            if error.startswith(_WRAPPED):
                error = error.removeprefix(_WRAPPED).lstrip("'\"")
            status = error.split(":", 1)[0]
            kind = f"HTTP {status}" if status.isdigit() else error.split("(", 1)[0].strip()
            kinds[kind] = kinds.get(kind, 0.0) + float(row["Occurrences"] or 0)
    return kinds


def aggregated(rows: Rows) -> dict[str, float]:
    """The run's totals over every request name."""
    return rows.get("Aggregated", {})
