"""Redis: the client factory (bounded timeouts, so a dead Redis is a clear error, not a hang) and
the one way Lua scripts are run, alone or inside a pipeline.

Scripts are called by their SHA-1 (`EVALSHA`), never by sending their source each time. Redis
forgets scripts when it restarts, fails over or runs `SCRIPT FLUSH`; the call then answers
NOSCRIPT, and `LuaScript.run` / `run_pipeline` load the script and run once more. Pipelines given
to `run_pipeline` must be safe to run twice (ours are: when a script is missing none of its
calls ran, and the other commands in them are reads or idempotent writes).

With tracing on, the client is a `TracedRedis`: every command, and every pipeline as one round
trip, is a span. Off, it is the plain client, so the hot path pays nothing for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from dmb import tracing
from dmb.errors import Unavailable
from dmb.settings import Settings

REFUSING_WRITES = "Redis is refusing writes (out of memory: maxmemory reached); try again later"


def _name(command: Any) -> str:
    text = command.decode("utf-8", "replace") if isinstance(command, bytes) else str(command)
    return text.upper()


class TracedPipeline(Pipeline):
    """A pipeline whose round trip is one span, naming the commands it carried."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands = [_name(args[0]) for args, _ in self.command_stack]
        attributes: tracing.Attributes = {
            "db.system.name": "redis",
            "db.operation.name": "PIPELINE",
            "db.operation.batch.size": len(commands),
            "dmb.redis.commands": sorted(set(commands)),
        }
        with tracing.child_span("redis PIPELINE", tracing.CLIENT, attributes):
            return await super().execute(raise_on_error)


class TracedRedis(aioredis.Redis):
    """The client `create_redis` makes when tracing is on: one span per command."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = _name(args[0])
        attributes = {"db.system.name": "redis", "db.operation.name": name}
        with tracing.child_span(f"redis {name}", tracing.CLIENT, attributes):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return TracedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


def create_redis(settings: Settings) -> aioredis.Redis:
    if settings.redis_url is None:
        raise ValueError("DMB_REDIS_URL is not set (start the local stack with `dmb up`)")
    client = TracedRedis if tracing.enabled() else aioredis.Redis
    return client.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=settings.store_timeout_seconds,
        socket_connect_timeout=settings.store_timeout_seconds,
        health_check_interval=30,
        decode_responses=False,
    )


class LuaScript:
    """A Lua script known by its SHA-1; `queue` adds a call to a pipeline, `run` calls it alone."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis' own naming

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[Any]) -> None:
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    async def run(self, redis: aioredis.Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)


async def run_pipeline(
    redis: aioredis.Redis, scripts: Sequence[LuaScript], fill: Callable[[Pipeline], None]
) -> list[Any]:
    """One round trip: a non-transactional pipeline filled by `fill`, its replies in order.

    A failed command raises its error; NOSCRIPT loads `scripts` and runs the pipeline again.
    """
    try:
        return await _execute(redis, fill)
    except NoScriptError:
        for script in scripts:
            await redis.script_load(script.source)
        return await _execute(redis, fill)


async def _execute(redis: aioredis.Redis, fill: Callable[[Pipeline], None]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        fill(pipe)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def store_refusal(error: BaseException) -> Unavailable | None:
    """The UNAVAILABLE answer for a Redis failure (None: not one; other errors are bugs).

    Redis out of memory refuses every command that could grow its data ("OOM command not
    allowed"); a request that needed such a write is answered 503 saying so, as is one that
    could not reach Redis (down, timed out, loading, a read-only replica after a failover), so
    neither becomes a 500."""
    if isinstance(error, redis_errors.OutOfMemoryError) or (
        isinstance(error, redis_errors.ResponseError) and str(error).startswith("OOM ")
    ):
        return Unavailable(REFUSING_WRITES)
    unreachable = (
        redis_errors.ConnectionError,  # BusyLoadingError (a restart loading its data) included
        redis_errors.TimeoutError,
        redis_errors.ReadOnlyError,  # a replica, during a failover
    )
    if isinstance(error, unreachable):
        return Unavailable(f"Redis unavailable ({type(error).__name__}); try again later")
    return None
