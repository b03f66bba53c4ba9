"""Who is calling: access-token verification shared by the gateway and the gRPC ingress.

Tokens are verified with a pinned asymmetric algorithm (never `none`, never HS*), the key chosen
by the token's `kid` among the configured public keys, `exp`/`nbf` with a small leeway, and `iss`
and `aud` checked. Logged-out tokens are refused through the revocations of
dmb.domain.revocation: durable in Postgres, cached in Redis under the `jti`.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
import redis.asyncio as aioredis

from dmb.domain.revocation import Revocations
from dmb.domain.revocation import denylist_key as denylist_key  # re-exported
from dmb.errors import Unauthenticated
from dmb.settings import Settings

REQUIRED_CLAIMS = ("sub", "iat", "exp", "iss", "aud", "jti")


@dataclass(frozen=True)
class Caller:
    """The verified identity behind a request. Never built from a client-settable field.

    `revocation_checked`: whoever built it already knows the token is not revoked (the gateway,
    from the revocation cache it reads during admission, or `TokenVerifier.verify`). When False
    the service boundary (serve_apps/rpc.py) asks `Revocations` before the method runs, so a
    gateway that could not read Redis never lets a logged-out token through.
    """

    user_id: int
    jti: str
    expires_at: int
    revocation_checked: bool = False

    def checked(self) -> Caller:
        """The same caller, known not to be revoked."""
        return dataclasses.replace(self, revocation_checked=True)


class TokenVerifier:
    """Verifies access tokens against the public keys in settings.

    A token that verified is remembered (by its whole text, signature included, so no other
    string can hit the entry) until it expires: an Ed25519 check costs ~0.1 ms of CPU, a tenth
    of the gateway's per-request budget, and a client sends the same token for 15 minutes.
    Revocation is not cached here: it is asked on every request (`verify`, or the gateway's
    admission round trip). A key removed from settings stops verifying when processes restart,
    which a key rotation does anyway. `redis` alone (no `revocations`) checks the Redis cache
    only, and refuses as unavailable what the cache cannot tell.
    """

    CACHE_SIZE = 4096

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        self._algorithm = settings.jwt_algorithm
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        if revocations is None and redis is not None:
            revocations = Revocations(settings, None, redis)
        self._revocations = revocations
        self._keys: dict[str, Any] = {
            kid: jwt.algorithms.get_default_algorithms()[self._algorithm].prepare_key(pem)
            for kid, pem in settings.jwt_public_keys.items()
        }
        self._verified: OrderedDict[str, Caller] = OrderedDict()

    def verify_signature(self, token: str) -> Caller:
        """Check signature and claims (no network). Raises Unauthenticated with the reason."""
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at + self._leeway > time.time():
                self._verified.move_to_end(token)
                return known
            del self._verified[token]  # expired: the full check below says so
        caller = self._verify(token)
        self._verified[token] = caller
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return caller

    def _verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed access token") from None
        if header.get("alg") != self._algorithm:
            raise Unauthenticated("access token uses an algorithm this service does not accept")
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise Unauthenticated("access token signed with an unknown key")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("access token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid access token: {exc}") from None
        try:
            user_id = int(claims["sub"])
        except (TypeError, ValueError):
            raise Unauthenticated("invalid access token: bad subject") from None
        return Caller(user_id=user_id, jti=str(claims["jti"]), expires_at=int(claims["exp"]))

    async def verify(self, token: str) -> Caller:
        """Signature, claims, then revocation (cache, else Postgres; never failing open)."""
        return await self.confirm(self.verify_signature(token))

    async def confirm(self, caller: Caller) -> Caller:
        """`caller`, once known not to be revoked (asked of the revocations unless whoever built
        it already knew). Raises Unauthenticated for a revoked token, Unavailable when neither
        Redis nor Postgres can tell."""
        if caller.revocation_checked or self._revocations is None:
            return caller
        if await self._revocations.is_revoked(caller.jti, caller.expires_at, caller.user_id):
            raise Unauthenticated("access token has been revoked")
        return caller.checked()


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value; Unauthenticated otherwise."""
    if not authorization:
        raise Unauthenticated("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <token>'")
    return token.strip()


@dataclass(frozen=True)
class AccessToken:
    token: str
    jti: str
    expires_in: int


class AccessTokenIssuer:
    """Signs access tokens with the active private key; only the user service holds one."""

    def __init__(self, settings: Settings) -> None:
        if settings.jwt_private_key is None or settings.jwt_active_kid is None:
            raise ValueError(
                "DMB_JWT_PRIVATE_KEY and DMB_JWT_ACTIVE_KID are needed to issue tokens"
            )
        self._key = jwt.algorithms.get_default_algorithms()[settings.jwt_algorithm].prepare_key(
            settings.jwt_private_key.get_secret_value()
        )
        self._settings = settings

    def issue(self, user_id: int, now: int | None = None) -> AccessToken:
        issued_at = int(time.time()) if now is None else now
        ttl = self._settings.jwt_access_ttl_seconds
        jti = uuid.uuid4().hex
        claims = {
            "sub": str(user_id),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ttl,
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "jti": jti,
        }
        token = jwt.encode(
            claims,
            self._key,
            algorithm=self._settings.jwt_algorithm,
            headers={"kid": self._settings.jwt_active_kid},
        )
        return AccessToken(token=token, jti=jti, expires_in=ttl)
