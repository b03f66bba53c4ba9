"""Per-account login backoff: the answer to password guessing spread over many addresses.

The gateway's per-IP bucket slows one address down; an attacker with many addresses (or a
botnet) can still try passwords against one account as fast as the buckets of all of them
allow. So every account also counts its failed logins: the first few in a window are free,
each one after that locks the account for twice as long as the last (1 s, 2 s, 4 s, ... up to
a cap), and while it is locked a login is refused with 429 and Retry-After before any password
is checked, so a guess made during the lock tells the guesser nothing and costs no argon2 work.
A successful login clears the count.

The lock is per username as typed, whether or not the account exists, so the answers do not
reveal which usernames are registered. The cap keeps the price of the obvious abuse (locking
someone else out by failing on purpose) to minutes, which is what OWASP recommends over hard
lockouts. The state lives in Redis with TTLs; with Redis unavailable the guard fails open or
closed as the rate limiter does (`DMB_RATE_LIMIT_FAIL_OPEN`): it is a rate limit, not a
credential check.

The same guard, under a scope of its own (`scope`), counts the password checks of account
deletion: a stolen access token alone cannot guess its way to closing an account, and failing
there does not lock the owner out of logging in.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dmb.errors import TooManyAttempts, Unavailable
from dmb.settings import Settings
from dmb.stores.redis import LuaScript

SCRIPT = LuaScript(Path(__file__).with_name("login_backoff.lua").read_text())
log = logging.getLogger("dmb.login_guard")


def backoff_ms(failures: int, free: int, base_seconds: float, max_seconds: float) -> int:
    """How long the account is locked after its `failures`-th failure in the window (the
    Python model of login_backoff.lua)."""
    over = failures - free
    if over <= 0:
        return 0
    return math.floor(min(max_seconds * 1000, base_seconds * 1000 * 2.0 ** min(over - 1, 60)))


def _keys(username: str, scope: str = "login") -> tuple[str, str]:
    tag = f"dmb:{scope}:{{{username}}}"  # both keys in one Redis Cluster slot
    return f"{tag}:failures", f"{tag}:lock"


class LoginGuard:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        scope: str = "login",
        attempts: str = "failed logins",
    ) -> None:
        self._redis = redis
        self._scope = scope
        self._attempts = attempts
        self._free = settings.login_free_failures
        self._base = settings.login_backoff_base_seconds
        self._max = settings.login_backoff_max_seconds
        self._window = max(settings.login_failure_window_seconds, math.ceil(self._max))
        self._fail_open = settings.rate_limit_fail_open

    async def check(self, username: str) -> None:
        """Raise TooManyAttempts while the account is locked."""
        try:
            wait_ms = int(await self._redis.pttl(_keys(username, self._scope)[1]))
        except RedisError as exc:
            self._unavailable(exc)
            return
        if wait_ms > 0:
            raise self._locked(wait_ms)

    async def failed(self, username: str) -> TooManyAttempts | None:
        """Count a failed login; the lock it starts, if any (to tell the caller at once)."""
        try:
            _, lock_ms = await SCRIPT.run(
                self._redis,
                _keys(username, self._scope),
                [self._free, self._base * 1000, self._max * 1000, self._window],
            )
        except RedisError as exc:
            self._unavailable(exc)
            return None
        return self._locked(int(lock_ms)) if int(lock_ms) > 0 else None

    async def succeeded(self, username: str) -> None:
        try:
            await self._redis.delete(*_keys(username, self._scope))
        except RedisError as exc:  # the count expires by itself; a login that worked stands
            log.warning("could not clear the login failures of an account: %r", exc)

    def _locked(self, wait_ms: int) -> TooManyAttempts:
        seconds = max(1, math.ceil(wait_ms / 1000))
        return TooManyAttempts(
            f"too many {self._attempts} for this account; retry after {seconds} s", seconds
        )

    def _unavailable(self, exc: RedisError) -> None:
        if not self._fail_open:
            raise Unavailable("login is unavailable: the rate limiter cannot be reached") from exc
        log.warning("login backoff skipped, Redis unavailable: %r", exc)
