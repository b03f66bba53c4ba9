"""A Ray actor's long-running loop on a thread of its own, started by the constructor.

Ray restarts a crashed actor by running its constructor again (max_restarts=-1), so a loop
started there resumes by itself, with no caller needed to kick it off.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import ray

NAMESPACE = "dmb"


class BackgroundLoop:
    def __init__(self, name: str, body: Callable[[threading.Event], Coroutine[Any, Any, None]]):
        self.stop_requested = threading.Event()
        self._log = logging.getLogger(f"dmb.{name}")
        self._body = body
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._body(self.stop_requested))
        except Exception:
            self._log.exception("background loop crashed")
            raise

    def stop(self, timeout: float = 10) -> None:
        self.stop_requested.set()
        self._thread.join(timeout)


class LoopingActor:
    """An actor whose work is one BackgroundLoop. `shutdown` stops the loop and waits for it, so
    its cleanup runs (a consumer leaves its group, connections close) before the actor goes."""

    _loop: BackgroundLoop

    def shutdown(self) -> None:
        self._loop.stop()


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
