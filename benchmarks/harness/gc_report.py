"""The slow garbage collections of a run, from the processes' own reports (dmb.gc_pauses).

Every Ray worker of ours (and the monolith) logs one line per 10 s at most when a collection
took DMB_GC_SLOW_PAUSE_MS or longer; this sums those lines over the log files of a run, so a
benchmark can say whether GC pauses were among what slowed its requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_LINE = re.compile(
    r"gc: (?P<count>\d+) collections of (?P<slow>\d+) ms or more since the last report "
    r"\(generations 0/1/2: (?P<g0>\d+)/(?P<g1>\d+)/(?P<g2>\d+)\), "
    r"the longest (?P<longest>\d+) ms \(generation \d, (?P<cpu>\d+) ms of it on the CPU"
)


def slow_collections(lines: Iterable[str]) -> dict[str, Any]:
    """{"slow_collections": n, "longest_ms": x, "longest_cpu_ms": y (the CPU time of that
    longest one), "by_generation": {g: n}} over the lines."""
    total, longest, longest_cpu, by_generation = 0, 0, 0, {0: 0, 1: 0, 2: 0}
    for line in lines:
        found = _LINE.search(line)
        if found is None:
            continue
        total += int(found["count"])
        if int(found["longest"]) > longest:
            longest, longest_cpu = int(found["longest"]), int(found["cpu"])
        for generation in by_generation:
            by_generation[generation] += int(found[f"g{generation}"])
    return {
        "slow_collections": total,
        "longest_ms": longest,
        "longest_cpu_ms": longest_cpu,
        "by_generation": by_generation,
    }


def slow_collections_in(paths: Iterable[Path]) -> dict[str, Any]:
    def lines() -> Iterable[str]:
        for path in paths:
            with path.open(errors="replace") as handle:
                yield from handle

    return slow_collections(lines())


def ray_worker_logs() -> list[Path]:
    """The stderr/stdout files of this driver's Ray session's workers (replicas, actors)."""
    from ray._private import worker  # the session's folder: no public API names it

    node = worker._global_node
    if node is None:
        return []
    logs = Path(node.get_logs_dir_path())
    return sorted([*logs.glob("worker-*.err"), *logs.glob("worker-*.out")])
