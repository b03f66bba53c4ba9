"""Revoked access tokens: durable in Postgres, cached in Redis.

Logout writes the token's `jti` to `revoked_access_tokens` (migration 0005) with the time after
which no verifier accepts the token any more (`exp` plus the leeway), and then marks the cache
key `dmb:jwt:deny:<jti>` "1" until that time. Redis only caches that table; a flush, an eviction
or a Redis that is down or out of memory cannot bring a revoked token back:

- the cache key holds "1" (revoked) or "0" (checked in Postgres and not revoked, kept for
  `DMB_REVOCATION_CACHE_SECONDS`); the gateway reads it in the admission round trip it makes
  anyway, so a hit costs nothing extra;
- a miss (flushed, evicted, expired, never asked) or a Redis that cannot answer is decided by
  Postgres (the primary: a logout that just committed must be seen) and the answer is cached
  again, best effort;
- a "0" is only ever written with NX and a "1" always overwrites: a check that read Postgres
  just before a logout committed cannot hide the logout behind its late "0". Under OOM, when
  Redis refuses the "1", logout deletes the key instead (DEL is allowed under OOM), so the next
  check asks Postgres.

A deleted account (dmb.domain.account_deletion) revokes every token of its user at once,
whatever its jti: its row in `account_deletions` is asked on a cache miss together with the
jti, and `dmb:jwt:closed:<user id>` ("1") is read beside the jti's key, so a cached "0" of one
of its tokens no longer admits it.

The one window left: Redis reachable by the gateway but not by the user service at the moment
of logout, with a "0" already cached; the "0" then lives at most DMB_REVOCATION_CACHE_SECONDS.
"""

from __future__ import annotations

import contextlib
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dmb.errors import Unavailable
from dmb.settings import Settings
from dmb.stores.postgres import AsyncConn, Database

log = logging.getLogger("dmb.revocation")

REVOKED = b"1"
CLEAR = b"0"
# Pruning waits this long past a row's expiry: the largest leeway settings allow, so a verifier
# whose clock lags (or whose leeway was raised since) still finds the row.
PRUNE_MARGIN_SECONDS = 300


def denylist_key(jti: str) -> str:
    """The Redis key caching an access token's revocation state: "1" revoked, "0" not."""
    return f"dmb:jwt:deny:{jti}"


def account_closed_key(user_id: int) -> str:
    """The Redis key caching "this account was deleted: every token of it is revoked"."""
    return f"dmb:jwt:closed:{user_id}"


def cached_state(value: bytes | str | None) -> bool | None:
    """What a cache value says: True revoked, False not revoked, None unknown (ask Postgres)."""
    if value is None:
        return None
    raw = value.encode() if isinstance(value, str) else value
    if raw == REVOKED:
        return True
    if raw == CLEAR:
        return False
    return None


def cached_states(token: bytes | str | None, account: bytes | str | None) -> bool | None:
    """What the token's key and its account's key say together: a closed account revokes
    every token of it, whatever the token's own entry says."""
    if cached_state(account) is True:
        return True
    return cached_state(token)


class Revocations:
    """Revoke access tokens and answer "is this one revoked?", Postgres first, Redis as cache.

    `db` None: a cache-only checker (tools and tests); a miss then cannot be decided and is
    refused as unavailable, never admitted.
    """

    def __init__(
        self, settings: Settings, db: Database | None, redis: aioredis.Redis | None
    ) -> None:
        self._db = db
        self._redis = redis
        self._leeway = settings.jwt_leeway_seconds
        self._clear_seconds = settings.revocation_cache_seconds
        self._access_ttl = settings.jwt_access_ttl_seconds

    def _lifetime(self, expires_at: int) -> int:
        """Seconds until no verifier accepts a token expiring at `expires_at` (at least 1)."""
        return max(1, expires_at + self._leeway - int(time.time()))

    async def revoke(self, jti: str, user_id: int, expires_at: int) -> None:
        """Durably revoke the token (Postgres), then update the cache."""
        if self._db is None:
            raise Unavailable("cannot revoke the access token: no database")
        async with self._db.transaction() as conn:
            await self.record(conn, jti, user_id, expires_at)
        await self.cache_revoked(jti, expires_at)

    async def record(self, conn: AsyncConn, jti: str, user_id: int, expires_at: int) -> None:
        """The durable half of `revoke`, inside the caller's transaction (logout revokes the
        refresh tokens in the same one); call `cache_revoked` once it has committed."""
        await conn.execute(
            "INSERT INTO revoked_access_tokens (jti, user_id, expires_at) "
            "VALUES (%s, %s, to_timestamp(%s)) ON CONFLICT (jti) DO NOTHING",
            (jti, user_id, expires_at + self._leeway),
        )

    async def cache_revoked(self, jti: str, expires_at: int) -> None:
        """Mark the committed revocation in the cache: "1" over whatever is there, or, when
        Redis refuses that (out of memory), no entry at all, so the next check asks Postgres."""
        if self._redis is None:
            return
        key = denylist_key(jti)
        try:
            await self._redis.set(key, REVOKED, ex=self._lifetime(expires_at))
            return
        except RedisError as exc:
            failure: RedisError = exc
        try:
            await self._redis.delete(key)
        except RedisError:
            log.warning(
                "revoked %s in Postgres but could not update the Redis cache (%s); a cached "
                "'not revoked' answer may live up to %d s",
                jti,
                type(failure).__name__,
                self._clear_seconds,
            )

    async def cache_account_closed(self, user_id: int) -> None:
        """After an account's deletion committed: "1" for the account, so every cached "0" of
        its tokens stops counting. Best effort: a miss asks Postgres, which knows."""
        if self._redis is None:
            return
        lifetime = self._access_ttl + self._leeway
        try:
            await self._redis.set(account_closed_key(user_id), REVOKED, ex=lifetime)
        except RedisError as exc:
            log.warning(
                "account %d deleted in Postgres but its Redis revocation key could not be set "
                "(%s); a cached 'not revoked' answer may live up to %d s",
                user_id,
                type(exc).__name__,
                self._clear_seconds,
            )

    async def cache_issued(self, jti: str, expires_at: int) -> None:
        """A token just issued cannot be revoked yet: cache "0" (NX, best effort), so its first
        request needs no Postgres lookup."""
        if self._redis is None:
            return
        ttl = min(self._clear_seconds, self._lifetime(expires_at))
        with contextlib.suppress(RedisError):
            await self._redis.set(denylist_key(jti), CLEAR, ex=ttl, nx=True)

    async def is_revoked(self, jti: str, expires_at: int, user_id: int) -> bool:
        """The cache (the token's key and its account's), then Postgres on a miss or when
        Redis cannot answer."""
        if self._redis is not None:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.get(denylist_key(jti))
                    pipe.get(account_closed_key(user_id))
                    token, account = await pipe.execute()
                state = cached_states(token, account)
            except RedisError:
                state = None
            if state is not None:
                return state
        return await self.lookup(jti, expires_at, user_id)

    async def lookup(self, jti: str, expires_at: int, user_id: int) -> bool:
        """Ask Postgres (the primary) and cache the answer, best effort. Raises Unavailable
        when Postgres cannot answer: a revocation check never fails open."""
        if self._db is None:
            raise Unavailable("cannot check token revocation: its cache missed and no database")
        async with self._db.reading(fresh=True) as conn:
            cursor = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = %s) "
                "OR EXISTS (SELECT 1 FROM account_deletions WHERE user_id = %s)",
                (jti, user_id),
            )
            row = await cursor.fetchone()
            revoked = bool(row and row[0])
        if self._redis is not None:
            key = denylist_key(jti)
            try:
                if revoked:
                    await self._redis.set(key, REVOKED, ex=self._lifetime(expires_at))
                else:
                    ttl = min(self._clear_seconds, self._lifetime(expires_at))
                    await self._redis.set(key, CLEAR, ex=ttl, nx=True)
            except RedisError:
                pass  # the answer stands; the next check asks Postgres again
        return revoked

    async def prune(self) -> tuple[int, int]:
        """Delete revoked access tokens and refresh tokens no verifier would accept any more;
        return how many of each went."""
        if self._db is None:
            return (0, 0)
        async with self._db.transaction() as conn:
            access = await conn.execute(
                "DELETE FROM revoked_access_tokens "
                "WHERE expires_at < now() - make_interval(secs => %s)",
                (PRUNE_MARGIN_SECONDS,),
            )
            refresh = await conn.execute(
                "DELETE FROM refresh_tokens WHERE expires_at < now() - make_interval(secs => %s)",
                (PRUNE_MARGIN_SECONDS,),
            )
        return (access.rowcount, refresh.rowcount)
