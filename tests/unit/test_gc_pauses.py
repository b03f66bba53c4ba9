"""GC pauses (dmb.gc_pauses): the start-up heap leaves the collector's walks, every collection is
counted, and slow ones are reported once, with what they were. The real collector, no fakes."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

from dmb import gc_pauses
from dmb.composition import tame_garbage_collection
from dmb.settings import Settings


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    """Each test starts and ends with nothing frozen and no watch left behind."""
    gc.unfreeze()
    before = list(gc.callbacks)
    yield
    gc.callbacks[:] = before
    gc.unfreeze()


def _startup_heap() -> list[list[int]]:
    return [[i] for i in range(50_000)]  # 50,001 tracked containers


def test_a_frozen_heap_is_no_longer_walked_by_full_collections() -> None:
    heap = _startup_heap()
    tracked_before = len(gc.get_objects())
    frozen = gc_pauses.freeze_startup_heap()
    assert frozen >= len(heap)
    assert len(gc.get_objects()) <= tracked_before - len(heap)  # what a collection walks
    assert all(not any(o is heap for o in gc.get_objects(generation=g)) for g in range(3))


def test_every_collection_is_counted_and_a_slow_one_kept_for_the_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = gc_pauses.PauseWatch(slow_seconds=0.0, report_every=3_600)  # everything is "slow"
    watch.install()
    watch.install()  # once: a second install adds no second callback
    assert gc.callbacks.count(watch._callback) == 1
    gc.collect()
    assert watch.collections[2] >= 1
    with caplog.at_level(logging.WARNING, logger="dmb.gc"):
        watch.report()
    reported = [r.getMessage() for r in caplog.records]
    assert any("gc: " in line and "generation 2" in line for line in reported)
    assert watch.slow_pauses() == []  # reported once, then forgotten
    watch.uninstall()
    assert watch._callback not in gc.callbacks


def test_fast_collections_are_counted_but_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    watch = gc_pauses.PauseWatch(slow_seconds=3_600, report_every=3_600)
    watch.install()
    gc.collect(0)
    assert watch.collections[0] >= 1
    with caplog.at_level(logging.WARNING, logger="dmb.gc"):
        watch.report()
    assert not [r for r in caplog.records if r.name == "dmb.gc"]
    watch.uninstall()


def test_a_process_freezes_its_heap_and_times_its_collections_by_default() -> None:
    heap = _startup_heap()
    callbacks_before = len(gc.callbacks)
    tame_garbage_collection(Settings())
    assert gc.get_freeze_count() >= len(heap)
    assert len(gc.callbacks) == callbacks_before + 1


def test_both_can_be_switched_off() -> None:
    callbacks_before = len(gc.callbacks)
    tame_garbage_collection(Settings(gc_freeze=False, gc_slow_pause_ms=0))
    assert gc.get_freeze_count() == 0
    assert len(gc.callbacks) == callbacks_before


def test_the_benchmark_reads_what_the_watch_reports(caplog: pytest.LogCaptureFixture) -> None:
    from benchmarks.harness.gc_report import slow_collections

    watch = gc_pauses.PauseWatch(slow_seconds=0.0, report_every=3_600)
    watch.install()
    gc.collect()
    gc.collect()
    with caplog.at_level(logging.WARNING, logger="dmb.gc"):
        watch.report()
    watch.uninstall()
    found = slow_collections(["noise", *(r.getMessage() for r in caplog.records)])
    assert found["slow_collections"] >= 2
    assert found["by_generation"][2] >= 1


def test_what_survives_a_slow_full_collection_is_frozen_next() -> None:
    watch = gc_pauses.PauseWatch(slow_seconds=0.0, report_every=3_600, refreeze=True)
    watch.install()
    assert not watch.freeze_survivors()  # no slow full collection yet
    heap = _startup_heap()  # built after the start-up freeze, as a first request's caches are
    gc.collect()  # "slow" (the threshold is 0): its survivors are long-lived
    assert watch.freeze_survivors()
    assert not any(o is heap for o in gc.get_objects())
    assert not watch.freeze_survivors()  # once per slow full collection
    watch.uninstall()


def test_without_refreeze_a_slow_full_collection_is_only_reported() -> None:
    watch = gc_pauses.PauseWatch(slow_seconds=0.0, report_every=3_600, refreeze=False)
    watch.install()
    gc.collect()
    assert not watch.freeze_survivors()
    assert gc.get_freeze_count() == 0
    watch.uninstall()


def test_a_report_counts_each_generation_and_tells_cpu_time_from_waiting() -> None:
    from benchmarks.harness.gc_report import slow_collections

    lines = [
        "gc: 3 collections of 20 ms or more since the last report (generations 0/1/2: 1/2/0), "
        "the longest 150 ms (generation 1, 9 ms of it on the CPU, the rest waiting for a core)",
        "gc: 1 collections of 20 ms or more since the last report (generations 0/1/2: 0/0/1), "
        "the longest 40 ms (generation 2, 38 ms of it on the CPU, the rest waiting for a core)",
    ]
    found = slow_collections(lines)
    assert found == {
        "slow_collections": 4,
        "longest_ms": 150,
        "longest_cpu_ms": 9,
        "by_generation": {0: 1, 1: 2, 2: 1},
    }


def test_each_pause_carries_the_collector_s_own_cpu_time() -> None:
    watch = gc_pauses.PauseWatch(slow_seconds=0.0, report_every=3_600)
    watch.install()
    _startup_heap()
    gc.collect()
    watch.uninstall()
    (*_, pause) = watch.slow_pauses()
    assert pause.generation == 2
    assert 0.0 <= pause.cpu_seconds <= pause.seconds + 0.01  # thread_time ticks coarser
