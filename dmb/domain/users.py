"""Accounts and sessions: registration, login, refresh-token rotation, logout, account reads.

Field rules (username pattern, email shape, password length, token format) are declared in
proto/dmb/v1/users.proto and checked at the RPC boundary before these methods run; what is
left here needs the database. Passwords are hashed with argon2id off the event loop. Refresh
tokens are opaque random strings stored as SHA-256 hashes; each rotation adds a row to the
same family, and presenting a token that was already rotated revokes the whole family (a
stolen token was replayed). Logout revokes the family and the access token's `jti`, both in
Postgres (dmb.domain.revocation; Redis only caches the latter), so no flush, eviction or Redis
outage brings either back.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import sql

from dmb.domain.identity import AccessToken, AccessTokenIssuer, Caller
from dmb.domain.login_guard import LoginGuard
from dmb.domain.revocation import Revocations
from dmb.domain.timestamps import to_timestamp
from dmb.domain.username_hold import lock_username, refuse_if_held
from dmb.errors import AlreadyExists, NotFound, Unauthenticated
from dmb.settings import Settings
from dmb.stores.postgres import Database
from dmb.v1 import resources_pb2, users_pb2

USER_COLUMNS = "id, username, email, created_at, display_name, bio"
# The profile fields an update mask may name; `*` names them all (AIP-134).
PROFILE_FIELDS = ("display_name", "bio")
BAD_LOGIN = "wrong username or password"
TOKEN_TYPE = "Bearer"  # noqa: S105 - the OAuth token type, not a secret

# argon2id at OWASP's first recommended setting (19 MiB, 2 passes, 1 lane): about 30 ms of one
# core here, run in a thread so a replica keeps serving other requests meanwhile.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)


@dataclass(frozen=True)
class Session:
    """What login and refresh hand back: a signed access token and an opaque refresh token."""

    access: AccessToken
    refresh_token: str
    user_id: int


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def user_message(row: Sequence[Any], with_email: bool) -> resources_pb2.User:
    user_id, username, email, created_at, display_name, bio = row
    return resources_pb2.User(
        id=user_id,
        username=username,
        email=email if with_email else "",
        created_at=to_timestamp(created_at),
        display_name=display_name,
        bio=bio,
    )


def masked_profile_fields(paths: Sequence[str]) -> list[str]:
    """The columns an update mask names, in a fixed order. Which masks are valid (known paths,
    at least one, `*` alone) is declared on UpdateProfileRequest.update_mask and checked at
    the RPC boundary."""
    if "*" in paths:
        return list(PROFILE_FIELDS)
    return [name for name in PROFILE_FIELDS if name in paths]


class UserAccounts:
    """The user service's domain logic, transport-free."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        redis: aioredis.Redis,
        issuer: AccessTokenIssuer,
        guard: LoginGuard,
        revocations: Revocations | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._redis = redis
        self._issuer = issuer
        self._guard = guard
        self._revocations = revocations or Revocations(settings, db, redis)
        self._dummy_hash = _HASHER.hash(secrets.token_urlsafe(16))

    async def register(self, username: str, email: str, password: str) -> resources_pb2.User:
        password_hash = await asyncio.to_thread(_HASHER.hash, password)
        try:
            async with self._db.transaction() as conn:
                await lock_username(conn, username)
                await refuse_if_held(conn, username)
                cursor = await conn.execute(
                    "INSERT INTO users (username, email, password_hash) VALUES (%s, %s, %s) "
                    f"RETURNING {USER_COLUMNS}",
                    (username, email, password_hash),
                )
                row = await cursor.fetchone()
                assert row is not None
                await self._db.remember_write(conn, int(row[0]))
        except psycopg.errors.UniqueViolation as exc:
            taken = "email" if "email" in (exc.diag.constraint_name or "") else "username"
            raise AlreadyExists(f"that {taken} is already registered") from None
        return user_message(row, with_email=True)

    async def login(self, username: str, password: str) -> Session:
        await self._guard.check(username)  # a locked account: refused before any password work
        async with self._db.reading(fresh=True) as conn:  # may follow registration at once
            cursor = await conn.execute(
                "SELECT id, password_hash FROM users WHERE username = %s", (username,)
            )
            row = await cursor.fetchone()
        stored = row[1] if row else self._dummy_hash  # same work whether or not the user exists
        if not await asyncio.to_thread(verify_password, stored, password) or row is None:
            raise await self._guard.failed(username) or Unauthenticated(BAD_LOGIN)
        await self._guard.succeeded(username)
        user_id = int(row[0])
        refresh = await self._new_refresh_token(user_id, family_id=None)
        return await self._session(user_id, refresh)

    async def refresh(self, refresh_token: str) -> Session:
        reused = False
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "SELECT id, user_id, family_id, expires_at < now(), rotated_at IS NOT NULL, "
                "revoked_at IS NOT NULL FROM refresh_tokens WHERE token_hash = %s FOR UPDATE",
                (_hash_token(refresh_token),),
            )
            row = await cursor.fetchone()
            if row is None:
                raise Unauthenticated("refresh token is not valid")
            token_id, user_id, family_id, expired, rotated, revoked = row
            if rotated or revoked:
                # Replay of a used token: someone else may hold the chain. End it entirely.
                await conn.execute(
                    "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) "
                    "WHERE family_id = %s",
                    (family_id,),
                )
                reused = True
            elif expired:
                raise Unauthenticated("refresh token has expired: log in again")
            else:
                await conn.execute(
                    "UPDATE refresh_tokens SET rotated_at = now() WHERE id = %s", (token_id,)
                )
                new_token = await self._insert_refresh_token(conn, int(user_id), int(family_id))
        if reused:
            raise Unauthenticated("refresh token was already used: every session of it is revoked")
        return await self._session(int(user_id), new_token)

    async def _session(self, user_id: int, refresh_token: str) -> Session:
        access = self._issuer.issue(user_id)
        expires_at = int(time.time()) + access.expires_in
        await self._revocations.cache_issued(access.jti, expires_at)
        return Session(access, refresh_token, user_id)

    async def logout(self, caller: Caller, refresh_token: str) -> None:
        async with self._db.transaction() as conn:  # both, or neither
            await self._revocations.record(conn, caller.jti, caller.user_id, caller.expires_at)
            await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) "
                "WHERE family_id = (SELECT family_id FROM refresh_tokens "
                "                   WHERE token_hash = %s AND user_id = %s)",
                (_hash_token(refresh_token), caller.user_id),
            )
        await self._revocations.cache_revoked(caller.jti, caller.expires_at)

    async def get_user(self, caller: Caller, user_id: int) -> resources_pb2.User:
        async with self._db.reading(for_user=caller.user_id) as conn:
            cursor = await conn.execute(
                f"SELECT {USER_COLUMNS} FROM users WHERE id = %s", (user_id,)
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        return user_message(row, with_email=caller.user_id == user_id)

    async def get_me(self, caller: Caller) -> resources_pb2.User:
        return await self.get_user(caller, caller.user_id)

    async def update_profile(
        self, caller: Caller, profile: users_pb2.Profile, paths: Sequence[str]
    ) -> resources_pb2.User:
        """Sets only the masked fields (AIP-134); an unknown path changes nothing."""
        fields = masked_profile_fields(paths)
        sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(n)) for n in fields)
        values = [getattr(profile, name) for name in fields]
        async with self._db.transaction() as conn:
            if fields:
                cursor = await conn.execute(
                    sql.SQL("UPDATE users SET {} WHERE id = %s RETURNING " + USER_COLUMNS).format(
                        sets
                    ),
                    (*values, caller.user_id),
                )
            else:
                cursor = await conn.execute(
                    f"SELECT {USER_COLUMNS} FROM users WHERE id = %s", (caller.user_id,)
                )
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"user {caller.user_id} does not exist")
            await self._db.remember_write(conn, caller.user_id)
        return user_message(row, with_email=True)

    async def get_users(self, user_ids: Sequence[int]) -> list[resources_pb2.User]:
        if not user_ids:
            return []
        async with self._db.reading() as conn:
            cursor = await conn.execute(
                f"SELECT {USER_COLUMNS} FROM users WHERE id = ANY(%s)",
                (list(user_ids),),
            )
            rows = await cursor.fetchall()
        return [user_message(row, with_email=False) for row in rows]

    async def _new_refresh_token(self, user_id: int, family_id: int | None) -> str:
        async with self._db.transaction() as conn:
            return await self._insert_refresh_token(conn, user_id, family_id)

    async def _insert_refresh_token(
        self, conn: psycopg.AsyncConnection[Any], user_id: int, family_id: int | None
    ) -> str:
        token = secrets.token_urlsafe(32)
        await conn.execute(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at) "
            "SELECT id, %s, coalesce(%s, id), %s, now() + make_interval(secs => %s) "
            "FROM (SELECT dmb_next_id() AS id) AS new_id",
            (user_id, family_id, _hash_token(token), self._settings.jwt_refresh_ttl_seconds),
        )
        return token


def verify_password(stored_hash: str, password: str) -> bool:
    """argon2id verification (about 30 ms of CPU: call it in a thread)."""
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False
