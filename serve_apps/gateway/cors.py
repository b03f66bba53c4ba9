"""CORS for browser clients: which origins may call the API, answered by the gateway itself.

Allowed origins come from `DMB_CORS_ALLOWED_ORIGINS` (none by default: a browser page on another
origin gets no CORS headers and its script cannot read a reply). A preflight (`OPTIONS` with
`Access-Control-Request-Method`) is answered here, without reaching a service, with the verbs the
path's routes take; actual responses to an allowed origin carry `Access-Control-Allow-Origin`
and expose the headers a client reads (rate limits, request id). Tokens travel in the
`Authorization` header, never in cookies, so credentials mode is not offered.
"""

from __future__ import annotations

from dataclasses import dataclass

ALLOWED_HEADERS = ("authorization", "content-type", "x-request-id")
EXPOSED_HEADERS = (
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Retry-After",
    "WWW-Authenticate",
    "X-Request-Id",
)


@dataclass(frozen=True)
class CorsPolicy:
    origins: frozenset[str]  # exact origins, or "*" for any
    max_age_seconds: int

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def allowed_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for a request from `origin` (None: refuse)."""
        if not origin or not self.origins:
            return None
        if origin in self.origins:
            return origin
        return "*" if "*" in self.origins else None

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers for an actual (non-preflight) response."""
        if not self.enabled:
            return {}
        headers = {"Vary": "Origin"}  # the answer differs per Origin: caches must know
        allowed = self.allowed_origin(origin)
        if allowed is not None:
            headers["Access-Control-Allow-Origin"] = allowed
            headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
        return headers

    def preflight_headers(self, origin: str, methods: list[str]) -> dict[str, str]:
        """Headers of a 204 preflight answer for an allowed origin."""
        allowed = self.allowed_origin(origin)
        assert allowed is not None
        return {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ", ".join(methods),
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
            "Access-Control-Max-Age": str(self.max_age_seconds),
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }


def parse_origins(raw: str) -> frozenset[str]:
    """`https://app.example.com, http://localhost:3000` -> the set (validated by Settings)."""
    return frozenset(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
