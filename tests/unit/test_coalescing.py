"""The gateway's coalescer: alone at low load, together under load, every answer to its caller."""

from __future__ import annotations

import asyncio

import pytest

from dmb.coalescing import Coalescer


class Service:
    """Answers each item with its double after a pause; remembers the batches it got."""

    def __init__(self, fail_on: int | None = None, broken: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self._fail_on = fail_on
        self._broken = broken

    async def send(self, key: str, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        await self.gate.wait()
        if self._broken:
            raise ConnectionError("the replica is gone")
        return [ValueError(f"bad {i}") if i == self._fail_on else i * 2 for i in items]


def test_a_lone_call_goes_at_once() -> None:
    async def scenario() -> tuple[int, list[list[int]]]:
        service = Service()
        service.gate.set()
        coalescer: Coalescer[str, int, int] = Coalescer(service.send)
        return await coalescer.submit("posts", 21), service.batches

    assert asyncio.run(scenario()) == (42, [[21]])


def test_calls_that_arrive_while_slots_are_busy_leave_as_one_batch() -> None:
    async def scenario() -> tuple[list[int], list[list[int]]]:
        service = Service()
        coalescer: Coalescer[str, int, int] = Coalescer(service.send, max_in_flight=2)
        calls = [asyncio.ensure_future(coalescer.submit("posts", i)) for i in range(10)]
        await asyncio.sleep(0)
        service.gate.set()
        return await asyncio.gather(*calls), service.batches

    results, batches = asyncio.run(scenario())
    assert results == [i * 2 for i in range(10)]
    assert batches == [[0], [1], [2, 3, 4, 5, 6, 7, 8, 9]]  # two alone, then one for the rest


def test_targets_are_independent_and_batches_are_bounded() -> None:
    async def scenario() -> list[list[int]]:
        service = Service()
        coalescer: Coalescer[str, int, int] = Coalescer(service.send, max_in_flight=1, max_batch=3)
        calls = [asyncio.ensure_future(coalescer.submit("posts", i)) for i in range(7)]
        calls.append(asyncio.ensure_future(coalescer.submit("feed", 100)))
        await asyncio.sleep(0)
        service.gate.set()
        await asyncio.gather(*calls)
        return service.batches

    assert asyncio.run(scenario()) == [[0], [100], [1, 2, 3], [4, 5, 6]]


def test_each_caller_gets_its_own_error_and_a_failed_call_fails_its_batch() -> None:
    async def scenario(service: Service) -> list[object]:
        service.gate.set()
        coalescer: Coalescer[str, int, int] = Coalescer(service.send, max_in_flight=1)
        calls = [asyncio.ensure_future(coalescer.submit("posts", i)) for i in range(3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    mixed = asyncio.run(scenario(Service(fail_on=1)))
    assert mixed[0] == 0
    assert mixed[2] == 4
    assert isinstance(mixed[1], ValueError)
    broken = asyncio.run(scenario(Service(broken=True)))
    assert all(isinstance(result, ConnectionError) for result in broken)


def test_a_caller_that_gave_up_is_left_out() -> None:
    async def scenario() -> list[list[int]]:
        service = Service()
        coalescer: Coalescer[str, int, int] = Coalescer(service.send, max_in_flight=1)
        first = asyncio.ensure_future(coalescer.submit("posts", 1))
        gone = asyncio.ensure_future(coalescer.submit("posts", 2))
        kept = asyncio.ensure_future(coalescer.submit("posts", 3))
        await asyncio.sleep(0)
        gone.cancel()  # its deadline passed while it queued
        service.gate.set()
        assert await first == 2
        assert await kept == 6
        with pytest.raises(asyncio.CancelledError):
            await gone
        return service.batches

    assert asyncio.run(scenario()) == [[1], [3]]
