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
    r"gc: (?P<count>\d+) collections of (?P<slow>\d+) ms or more since the last report, "
    r"the longest (?P<longest>\d+) ms \(generation (?P<generation>\d)\)"
)


def slow_collections(lines: Iterable[str]) -> dict[str, Any]:
    """{"slow_collections": n, "longest_ms": x, "by_generation": {g: n}} over the lines."""
    total, longest, by_generation = 0, 0, {0: 0, 1: 0, 2: 0}
    for line in lines:
        found = _LINE.search(line)
        if found is None:
            continue
        total += int(found["count"])
        longest = max(longest, int(found["longest"]))
        by_generation[int(found["generation"])] += int(found["count"])
    return {"slow_collections": total, "longest_ms": longest, "by_generation": by_generation}


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
