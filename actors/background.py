"""A Ray actor's long-running loop on a thread of its own, started by the constructor.

Ray restarts a crashed actor by running its constructor again (max_restarts=-1), so a loop
started there resumes by itself, with no caller needed to kick it off.

A loop must never die quietly while its actor lives: Ray would see a healthy actor and never
restart it (a relay that publishes nothing, a consumer that consumes nothing). So:

- an `Exception` out of the loop's body (a store that went away, a broker not up yet, a
  `CommitFailedError` after a rebalance) is logged with its traceback and the body is run again
  after a capped exponential backoff (`Backoff`); the body opens its connections afresh at
  every run, so a run is a reconnect. The backoff starts over once a run did useful work
  (`progressed`).
- anything else that ends the thread without a stop being asked for (a `BaseException`, a
  bug in this retry code itself) exits the actor's process (`os._exit(1)`, after logging):
  `ray.actor.exit_actor()` cannot be called from a thread, and Ray then restarts the actor,
  whose constructor starts the loop again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import ray

NAMESPACE = "dmb"


@dataclass
class Backoff:
    """Capped exponential backoff: `initial`, doubling up to `cap` seconds; `reset` starts over.
    Pure arithmetic, so a unit test can check it."""

    initial: float = 0.5
    cap: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * 2.0**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def _exit_process(code: int) -> None:  # pragma: no cover - replaced in unit tests
    logging.shutdown()
    os._exit(code)


class BackgroundLoop:
    def __init__(
        self,
        name: str,
        body: Callable[[threading.Event], Coroutine[Any, Any, None]],
        backoff: Backoff | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.stop_requested = threading.Event()
        self.failures = 0  # runs of the body that ended in an exception, since the start
        self._name = name
        self._log = logging.getLogger(f"dmb.{name}")
        self._body = body
        self._backoff = backoff or Backoff()
        self._on_failure = on_failure
        self._progressed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # One event loop for the thread's whole life: the store clients a body opens (the
            # async Postgres pools, Redis) belong to the loop they were opened in, and a run
            # that failed must find them working on the next one.
            asyncio.run(self._retry_forever())
        except BaseException:
            self._log.critical(
                "background loop %s cannot continue: exiting the process so that Ray restarts "
                "the actor",
                self._name,
                exc_info=True,
            )
            _exit_process(1)

    def progressed(self) -> None:
        """Called by the body once a run did useful work (a pass, a poll): the next failure
        then waits `initial` again. A run that only tried to connect, however long, does not."""
        self._progressed = True

    async def _retry_forever(self) -> None:
        while not self.stop_requested.is_set():
            self._progressed = False
            try:
                await self._body(self.stop_requested)
            except Exception as exc:
                self.failures += 1
                if self._progressed:
                    self._backoff.reset()
                delay = self._backoff.next_delay()
                self._log.error(
                    "background loop %s failed (%s: %s); reconnecting in %.1f s",
                    self._name,
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=True,
                )
                if self._on_failure is not None:
                    self._on_failure(exc)
                await asyncio.to_thread(self.stop_requested.wait, delay)
                continue
            if not self.stop_requested.is_set():
                raise RuntimeError(f"the body of {self._name} returned without a stop request")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10) -> None:
        self.stop_requested.set()
        self._thread.join(timeout)


class LoopingActor:
    """An actor whose work is one BackgroundLoop. `shutdown` stops the loop and waits for it, so
    its cleanup runs (a consumer leaves its group, connections close) before the actor goes."""

    _loop: BackgroundLoop

    def shutdown(self) -> None:
        self._loop.stop()

    def _progressed(self) -> None:
        """For the loop's body: this run did useful work (see BackgroundLoop.progressed). Safe
        before the constructor has stored `_loop`: the thread starts inside BackgroundLoop's."""
        loop = self.__dict__.get("_loop")
        if loop is not None:
            loop.progressed()

    def loop_failures(self) -> int:
        """How many runs of the loop failed (and were retried) in this incarnation."""
        return self._loop.failures


def ensure_singleton(actor: type, name: str, *args: Any) -> Any:
    """The cluster's one named, detached instance of `actor`, created on first call.

    Idempotent across callers (every Serve replica may call it); Ray restarts the actor when it
    dies, forever, and its constructor resumes its loop. It reserves no CPU: it mostly waits.
    """
    actor_class: Any = ray.remote(actor)
    return actor_class.options(
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        num_cpus=0,
    ).remote(*args)
