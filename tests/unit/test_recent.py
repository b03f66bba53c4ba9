"""Recent (behind /healthz): one computation in flight, shared by concurrent callers, reused while
fresh, recomputed once stale, and a failure never remembered. A fake clock, so no wall time."""

from __future__ import annotations

import asyncio

import pytest

from dmb.stores.recent import Recent


class FakeProbe:
    """Counts its runs; each run waits until the test releases it."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self) -> int:
        self.runs += 1
        await self.release.wait()
        if self.fail:
            raise ConnectionError("store down")
        return self.runs


async def _settle() -> None:
    """Let every ready task run up to its next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_concurrent_callers_share_one_probe_and_reuse_it_while_fresh() -> None:
    async def scenario() -> None:
        now = [100.0]
        probe = FakeProbe()
        recent = Recent(probe, ttl=1.5, clock=lambda: now[0])
        callers = [asyncio.ensure_future(recent.get()) for _ in range(5)]
        await _settle()
        assert probe.runs == 1  # one in flight, the others wait for it
        probe.release.set()
        assert await asyncio.gather(*callers) == [1] * 5
        now[0] += 1.4
        assert await recent.get() == 1
        assert probe.runs == 1  # still fresh
        now[0] += 0.2
        assert await recent.get() == 2  # stale: probed again
        assert probe.runs == 2

    asyncio.run(scenario())


def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    async def scenario() -> None:
        probe = FakeProbe()
        probe.fail = True
        recent = Recent(probe, ttl=1.5, clock=lambda: 0.0)
        callers = [asyncio.ensure_future(recent.get()) for _ in range(3)]
        await _settle()
        probe.release.set()
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(result, ConnectionError) for result in results)
        assert probe.runs == 1
        probe.fail = False
        assert await recent.get() == 2  # the next call probes again

    asyncio.run(scenario())


def test_a_caller_that_gives_up_does_not_cancel_the_shared_probe() -> None:
    async def scenario() -> None:
        probe = FakeProbe()
        recent = Recent(probe, ttl=1.5, clock=lambda: 0.0)
        impatient = asyncio.ensure_future(recent.get())
        patient = asyncio.ensure_future(recent.get())
        await _settle()
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        probe.release.set()
        assert await patient == 1
        assert probe.runs == 1

    asyncio.run(scenario())
