"""Garbage-collection pauses: timed in every process, and the start-up heap kept out of them.

CPython's collector stops its process while it walks a generation's objects. The oldest
generation ends up holding nearly everything a Ray worker imported and built at start-up (Ray,
gRPC, protobuf descriptors, the stores' clients, our modules: well over 100,000 objects), all of
it alive for the process's life; walking it takes tens of milliseconds on this machine, and
every request in the replica waits for it: a slow request now and then, on any route, whatever
the route does. `freeze_startup_heap` moves what exists once a process is set up into the
permanent generation (`gc.freeze()`, which collections skip), so a later full collection walks
only what requests and caches made since. Cycles among frozen objects are never freed, which is
fine for start-up state that lives as long as the process.

Some start-up happens after the freeze, on first use (a service's first requests build its
protovalidate rules, pools and caches), and shows as a slow full collection later. So
`PauseWatch`, told to `refreeze`, freezes again right after a slow full collection: what
survived one is long-lived, and the next full collection walks only what came since. (An
object frozen that later becomes garbage is still freed by reference counting; only one caught
in a reference cycle stays.)

`PauseWatch` times each collection through `gc.callbacks`. The callback only records: it runs
in whichever thread's allocation triggered the collection, possibly inside a lock of Ray's or of
the logging module. A daemon thread does the rest once a second: the freeze, and a report of
what was slow (`slow_seconds` or more) as one log line per `report_every` seconds at most, so a
pause can be told from the request it delayed. Each pause is timed twice: wall-clock, which is
what the requests behind it waited, and the collecting thread's CPU time, which is the
collector's own work. On a machine with more runnable threads than cores the two differ by the
time the process waited for a core mid-collection: a slow pause with little CPU in it is
contention, not the heap.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger("dmb.gc")


@dataclass(frozen=True)
class Pause:
    generation: int
    seconds: float  # wall-clock: what a request waiting behind the collection saw
    cpu_seconds: float  # of it, the collecting thread's own CPU time: the collector's work


def freeze_startup_heap() -> int:
    """Collect once, then freeze every surviving object: returns how many are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class PauseWatch:
    """Times every collection of this process; keeps the slow ones for the reporter."""

    def __init__(
        self, slow_seconds: float = 0.02, report_every: float = 10.0, refreeze: bool = False
    ) -> None:
        self.slow_seconds = slow_seconds
        self.report_every = report_every
        self.refreeze = refreeze
        self.refreezes = 0
        self._slow_full_collection = False
        self.collections = [0, 0, 0]  # per generation, since install
        self.longest = [0.0, 0.0, 0.0]
        self._slow: deque[Pause] = deque(maxlen=1_000)
        self._started_at = 0.0
        self._started_cpu = 0.0
        self._reporter: threading.Thread | None = None
        self._stopped = threading.Event()

    def install(self) -> None:
        """Start timing (once), and the reporter thread."""
        if self._callback in gc.callbacks:
            return
        gc.callbacks.append(self._callback)
        self._reporter = threading.Thread(
            target=self._report_forever, name="gc-pauses", daemon=True
        )
        self._reporter.start()

    def uninstall(self) -> None:
        self._stopped.set()
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def slow_pauses(self) -> list[Pause]:
        """Slow pauses recorded and not reported yet, oldest first (and forgets them)."""
        taken: list[Pause] = []
        while self._slow:
            taken.append(self._slow.popleft())
        return taken

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started_at = time.perf_counter()
            self._started_cpu = time.thread_time()
            return
        seconds = time.perf_counter() - self._started_at
        cpu_seconds = time.thread_time() - self._started_cpu
        generation = int(info.get("generation", 0))
        self.collections[generation] += 1
        self.longest[generation] = max(self.longest[generation], seconds)
        if seconds >= self.slow_seconds:
            self._slow.append(Pause(generation, seconds, cpu_seconds))
            if generation == 2:
                self._slow_full_collection = True

    def _report_forever(self) -> None:
        last_report = time.monotonic()
        while not self._stopped.wait(1.0):
            self.freeze_survivors()
            if time.monotonic() - last_report >= self.report_every:
                last_report = time.monotonic()
                self.report()

    def freeze_survivors(self) -> bool:
        """After a slow full collection (and with `refreeze`), freeze what is tracked now."""
        if not (self.refreeze and self._slow_full_collection):
            return False
        self._slow_full_collection = False
        gc.freeze()
        self.refreezes += 1
        log.info(
            "gc: froze the survivors of a slow full collection (%d frozen in all)",
            gc.get_freeze_count(),
        )
        return True

    def report(self) -> None:
        slow = self.slow_pauses()
        if not slow:
            return
        longest = max(slow, key=lambda pause: pause.seconds)
        by_generation = [sum(p.generation == g for p in slow) for g in range(3)]
        log.warning(
            "gc: %d collections of %.0f ms or more since the last report (generations 0/1/2: "
            "%d/%d/%d), the longest %.0f ms (generation %d, %.0f ms of it on the CPU, "
            "the rest waiting for a core); %d objects tracked, %d frozen",
            len(slow),
            self.slow_seconds * 1000,
            *by_generation,
            longest.seconds * 1000,
            longest.generation,
            longest.cpu_seconds * 1000,
            len(gc.get_objects()),
            gc.get_freeze_count(),
        )
