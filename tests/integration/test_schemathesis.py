"""Schemathesis with every check against the live /openapi.json: nothing found, no 5xx.

The document is what clients, API consoles and generated SDKs trust; a schema-driven fuzzer
checks that the server keeps its promises both ways (every schema-valid request accepted, every
schema-violating one refused), that replies match their schemas, that auth is enforced, and that
links (a created post's id into GetPost, DeletePost, ...) lead to real resources. The run is
bounded (a few hundred cases, fixed seed) and paced under the per-user bucket's refill, so the
rate limiter answers none of it. The same command, for `make up`, is in the README.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from entrypoints.launcher import LocalSystem

REPO = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_schemathesis_with_every_check_finds_nothing(
    serve_system: LocalSystem, tmp_path: Path
) -> None:
    base = str(serve_system.addresses()["http"])
    environ = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SCHEMATHESIS_HOOKS": "tests.fuzz.schemathesis_hooks",
        "FUZZ_BASE_URL": base,
        "FUZZ_USERNAME": f"fz_{uuid.uuid4().hex[:12]}",
    }
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{base}/openapi.json",
            "--checks=all",
            "--max-examples=8",
            "--rate-limit=8/s",  # under the per-user refill (10/s): no 429s starve the run
            "--seed=20261202",
            "--request-timeout=30",
            "--no-color",
            f"--report-dir={tmp_path}",
        ],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    summary = run.stdout[-6000:]
    assert run.returncode == 0, summary
    counted = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert counted is not None, summary
    generated, passed = (int(n) for n in counted.groups())
    assert generated == passed >= 200, summary  # a real run, and every case passed
