"""The faults of a chaos run (issue 12), one function each, against a running `LocalSystem`
whose Ray driver is this process: kill a Serve replica, the CDC relay, a feed consumer or a
fan-out worker; restart the broker (it loses everything: memory engine), Redis (it loses
everything: no persistence, as in a crash) or the Postgres primary (it keeps its data).

Kills are what a crash does; Ray or Serve bring the actor back. Restarts stop the store, leave
it down for a random outage, and start it again on the same port. Each fault returns a short
description of what it hit. `schedule` picks when each fault happens, from a seeded RNG.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from entrypoints.launcher import LocalSystem

SERVE_NAMESPACE = "serve"
REPLICA_PREFIX = "SERVE_REPLICA::"


@dataclass(frozen=True)
class Injected:
    """One fault as it happened: `at_s` seconds after the run began, for `took_s` seconds."""

    fault: str
    at_s: float
    took_s: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    """The seven faults, against one system. `outage_s`: how long a stopped store stays down
    (uniform between the two bounds)."""

    def __init__(
        self, system: LocalSystem, rng: random.Random, outage_s: tuple[float, float] = (1.0, 5.0)
    ) -> None:
        assert system.stack is not None
        self._stack = system.stack
        self._rng = rng
        self._outage_s = outage_s

    def by_name(self) -> dict[str, Callable[[], str]]:
        return {
            "serve_replica": self.kill_serve_replica,
            "relay": self.kill_relay,
            "consumer": self.kill_consumer,
            "fanout_worker": self.kill_fanout_worker,
            "broker": self.restart_broker,
            "redis": self.restart_redis,
            "postgres": self.restart_postgres,
        }

    def kill_serve_replica(self) -> str:
        """A replica on the request path (the gateway or a service): Serve starts a new one;
        requests that were on it fail, the next ones go elsewhere. (Not the pipeline's
        supervisor: the pipeline faults below hit what it supervises.)"""
        import ray

        pipeline = REPLICA_PREFIX + "pipeline#"
        names: list[str] = sorted(
            actor["name"]
            for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["namespace"] == SERVE_NAMESPACE
            and actor["name"].startswith(REPLICA_PREFIX)
            and not actor["name"].startswith(pipeline)
        )
        name = self._rng.choice(names)
        ray.kill(ray.get_actor(name, namespace=SERVE_NAMESPACE), no_restart=True)
        return name.removeprefix(REPLICA_PREFIX)

    def kill_relay(self) -> str:
        """The CDC relay: Ray restarts it; it re-reads the slot from its last advanced position."""
        import ray

        from actors import cdc_relay
        from actors.background import NAMESPACE

        ray.kill(ray.get_actor(cdc_relay.NAME, namespace=NAMESPACE), no_restart=False)
        return cdc_relay.NAME

    def kill_consumer(self) -> str:
        """A feed consumer: Ray restarts it; it rejoins the group at the committed offsets."""
        import ray

        from actors.background import NAMESPACE

        name = self._rng.choice(_consumer_names())
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=False)
        return name

    def kill_fanout_worker(self, timeout: float = 60.0) -> str:
        """SIGKILL one fan-out worker process: Ray restarts it and retries its batch. Its
        consumer may itself be coming back from a kill: asked again until it answers."""
        import ray

        from actors.background import NAMESPACE

        deadline = time.monotonic() + timeout
        while True:
            name = self._rng.choice(_consumer_names())
            try:
                consumer = ray.get_actor(name, namespace=NAMESPACE)
                pids: list[int] = ray.get(consumer.worker_pids.remote(), timeout=10)
            except (ValueError, ray.exceptions.RayError):
                pids = []
            if pids:
                pid = self._rng.choice(pids)
                os.kill(pid, signal.SIGKILL)
                return f"{name} worker pid {pid}"
            if time.monotonic() > deadline:
                return "skipped: no consumer had a worker to kill"
            time.sleep(1)

    def restart_broker(self) -> str:
        assert self._stack.broker is not None
        return self._restart("broker", self._stack.broker.stop, self._stack.broker.start)

    def restart_redis(self) -> str:
        assert self._stack.redis is not None
        return self._restart("redis", self._stack.redis.stop, self._stack.redis.start)

    def restart_postgres(self) -> str:
        postgres = self._stack.postgres
        assert postgres is not None
        return self._restart("postgres primary", postgres.stop_primary, postgres.start_primary)

    def _restart(self, what: str, stop: Callable[[], None], start: Callable[[], None]) -> str:
        outage = self._rng.uniform(*self._outage_s)
        stop()
        time.sleep(outage)
        start()
        return f"{what} down {outage:.1f} s"


def _consumer_names() -> list[str]:
    import ray

    from actors import feed_consumer
    from actors.background import NAMESPACE

    prefix = feed_consumer.name_of(0).removesuffix("0")
    names = sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == NAMESPACE and actor["name"].startswith(prefix)
    )
    return names or [feed_consumer.name_of(0)]


FAULTS = (
    "serve_replica",
    "relay",
    "consumer",
    "fanout_worker",
    "broker",
    "redis",
    "postgres",
)


def schedule(
    rng: random.Random, seconds: float, rounds: int = 1, window: tuple[float, float] = (0.1, 0.7)
) -> list[tuple[float, str]]:
    """When each fault happens: every one of FAULTS `rounds` times, at random moments inside
    `window` (fractions of the run), sorted by time. The window ends well before the run
    does, so that load goes on after the last fault: what comes back broken (a consumer that
    never resumes) then shows as posts missing from the feeds."""
    low, high = window
    moments = [
        (round(rng.uniform(low * seconds, high * seconds), 2), fault)
        for _ in range(rounds)
        for fault in FAULTS
    ]
    return sorted(moments)


def inject(
    faults: Faults,
    plan: list[tuple[float, str]],
    started: float,
    stop: Callable[[], bool],
    log: Callable[[str], None] = print,
) -> list[Injected]:
    """Run `plan` against the clock that began at `started` (time.monotonic()); faults run one
    at a time, so one that takes long (a restart) delays the next. Stops early when `stop()`."""
    actions = faults.by_name()
    done: list[Injected] = []
    for at, name in plan:
        while time.monotonic() - started < at:
            if stop():
                return done
            time.sleep(0.1)
        began = time.monotonic()
        try:
            detail = actions[name]()
        except Exception as exc:  # a fault that could not be injected is reported, not fatal
            detail = f"failed to inject: {type(exc).__name__}: {exc}"
        injected = Injected(
            name, round(began - started, 1), round(time.monotonic() - began, 1), detail
        )
        log(f"  t={injected.at_s:6.1f}s  {name:<14} {detail} ({injected.took_s:.1f} s)")
        done.append(injected)
    return done
