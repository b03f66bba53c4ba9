"""Loops that survive their dependencies: the backoff arithmetic, BackgroundLoop running a failed
body again (and exiting the process when it cannot continue), and the CDC lag that grows while
the relay is stuck instead of freezing at its last value."""

from __future__ import annotations

import threading
import time

import pytest

from actors import background
from actors.background import BackgroundLoop, Backoff
from dmb.stores.cdc import LagClock, decode


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_reset() -> None:
    backoff = Backoff(initial=0.5, cap=4.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def _wait(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.01)
    raise AssertionError("not reached")


def test_a_failing_body_is_run_again_after_a_backoff_until_it_runs() -> None:
    runs: list[str] = []
    failures: list[BaseException] = []

    async def body(stop: threading.Event) -> None:
        runs.append("run")
        if len(runs) < 3:
            raise ConnectionError("broker not up yet")
        while not stop.is_set():
            time.sleep(0.01)

    loop = BackgroundLoop("t", body, Backoff(initial=0.01, cap=0.02), on_failure=failures.append)
    _wait(lambda: len(runs) == 3)
    assert loop.alive
    assert loop.failures == 2
    assert all(isinstance(exc, ConnectionError) for exc in failures)
    loop.stop()
    assert not loop.alive
    assert len(runs) == 3


def test_a_loop_that_cannot_continue_exits_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(background, "_exit_process", exits.append)

    async def returns_early(stop: threading.Event) -> None:
        return  # a body that ends without a stop request: nothing would relay any more

    async def interrupted(stop: threading.Event) -> None:
        raise KeyboardInterrupt

    for body in (returns_early, interrupted):
        loop = BackgroundLoop("t", body, Backoff(initial=0.01))
        _wait(lambda loop=loop: not loop.alive)
    assert exits == [1, 1]


def test_lag_grows_from_the_start_while_no_pass_succeeds() -> None:
    clock = LagClock(started_at=100.0)
    assert clock.seconds(100.0) == 0.0
    assert clock.seconds(160.0) == 60.0  # never reached Postgres: the lag keeps growing


def test_lag_is_zero_when_caught_up_and_grows_once_stuck() -> None:
    clock = LagClock(started_at=100.0)
    clock.caught_up(pass_started_at=200.0)
    assert clock.seconds(200.05) == pytest.approx(0.05)
    # Postgres goes away at 201: no pass succeeds from then on, the gauge keeps growing.
    assert clock.seconds(230.0) == 30.0
    assert clock.seconds(260.0) == 60.0


def test_lag_counts_from_the_oldest_change_read_but_not_delivered() -> None:
    clock = LagClock(started_at=100.0)
    clock.caught_up(pass_started_at=200.0)
    clock.pending(first_commit_at=210.0)  # the broker refuses this batch
    assert clock.seconds(240.0) == 30.0
    clock.pending(first_commit_at=235.0)  # a retry reads the same changes and more
    assert clock.seconds(240.0) == 30.0  # still the oldest one
    clock.relayed(last_commit_at=239.0)
    assert clock.seconds(240.0) == 1.0
    clock.caught_up(pass_started_at=240.0)
    assert clock.seconds(240.0) == 0.0


def test_lag_never_goes_below_zero_with_a_skewed_clock() -> None:
    clock = LagClock(started_at=100.0)
    clock.relayed(last_commit_at=105.0)  # the database's clock runs ahead of ours
    assert clock.seconds(104.0) == 0.0


def test_a_batch_knows_the_commit_time_of_its_first_and_last_transaction() -> None:
    def tx(xid: int, lsn: str, ts: str) -> list[tuple[str, str]]:
        return [
            (lsn, f'{{"action":"B","xid":{xid}}}'),
            (lsn, f'{{"action":"C","xid":{xid},"timestamp":"{ts}"}}'),
        ]

    batch = decode(
        tx(1, "0/10", "2026-12-02 20:00:00.000+00") + tx(2, "0/20", "2026-12-02 20:00:05.000+00")
    )
    assert batch.last_lsn == "0/20"
    assert batch.last_commit_ms - batch.first_commit_ms == 5000
