"""Read-your-writes: where a user's latest write sits in the WAL, kept where every reader finds it.

After a write commits, the primary's WAL position (LSN) is stored under the writer's id in Redis
for `REMEMBER_SECONDS` (`record`). A read on that user's behalf goes to the replica only once the
replica has replayed up to it (`dmb.stores.postgres.Database.reading`); everyone else reads the
replica. The gateway already makes one Redis round trip per request, so it reads the position
there (`position_key`) and hands it to the service with the request; the transport then declares
it `known` for the duration of the call, and the read needs no lookup of its own. The domain never
sees any of this: it only says whose read it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

REMEMBER_SECONDS = 30


def position_key(user_id: int) -> str:
    """Where the WAL position of `user_id`'s latest write is kept."""
    return f"dmb:ryw:{user_id}"


@dataclass(frozen=True)
class WritePosition:
    """`user_id`'s latest write position as already read this request (`lsn` None: none recent)."""

    user_id: int
    lsn: str | None


_known: ContextVar[WritePosition | None] = ContextVar("dmb_known_write_position", default=None)


@contextlib.contextmanager
def known(position: WritePosition | None) -> Iterator[None]:
    """Inside the block, reads for `position.user_id` use `position` instead of asking Redis."""
    token = _known.set(position)
    try:
        yield
    finally:
        _known.reset(token)


def known_for(user_id: int) -> WritePosition | None:
    """The position declared `known` for this user in the current request, if any."""
    position = _known.get()
    return position if position is not None and position.user_id == user_id else None


async def record(redis: aioredis.Redis, user_id: int, lsn: str) -> None:
    """Remember a committed write. Without Redis (down, or out of memory and refusing the SET),
    reads may lag by the replica's delay; the write itself is safe and already committed, so a
    Redis failure here is swallowed rather than answering 5xx for a write that happened."""
    with contextlib.suppress(RedisError):
        await redis.set(position_key(user_id), lsn, ex=REMEMBER_SECONDS)


async def lookup(redis: aioredis.Redis, user_id: int) -> str | None:
    """The user's remembered position; raises the Redis error when Redis cannot answer."""
    value = await redis.get(position_key(user_id))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
