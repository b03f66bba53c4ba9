"""Counter flusher: a detached Ray actor that writes dirty like/comment counts to Postgres.

Its loop runs on a BackgroundLoop, so when Ray restarts the actor after a crash the loop starts
again by itself; the work it was doing is still in Redis' `flushing` set (see
dmb.domain.counters) and is picked up on the next pass.

The same loop prunes, every `PRUNE_SECONDS`, the revoked access tokens and refresh tokens that
no verifier accepts any more (dmb.domain.revocation): one small housekeeping job, one singleton.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from actors.background import BackgroundLoop, LoopingActor, ensure_singleton
from dmb.composition import process_components

NAME = "counter-flusher"
PRUNE_SECONDS = 600.0
log = logging.getLogger("dmb.counter_flusher")


class CounterFlusher(LoopingActor):
    def __init__(self) -> None:
        self._components = process_components()
        self._flushed = 0
        self._passes = 0
        self._loop = BackgroundLoop(NAME, self._run)

    async def _run(self, stop: threading.Event) -> None:
        components = self._components
        await components.ready()
        next_prune = time.monotonic() + PRUNE_SECONDS
        while not stop.is_set():
            try:
                self._flushed += await components.counters.flush()
                self._passes += 1
            except Exception:
                log.exception("counter flush failed; retrying next interval")
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_SECONDS
                try:
                    access, refresh = await components.revocations.prune()
                    log.info("pruned %d revoked access tokens, %d refresh tokens", access, refresh)
                except Exception:
                    log.exception("pruning expired tokens failed; retrying next time")
            await asyncio.sleep(components.settings.counter_flush_seconds)

    def stats(self) -> dict[str, int]:
        return {"posts_flushed": self._flushed, "passes": self._passes}


def start() -> Any:
    """The one flusher of this cluster, created on first call (idempotent across callers)."""
    return ensure_singleton(CounterFlusher, NAME)
