"""One typed settings object, read from `DMB_*` environment variables and validated at start.

Built by `load_settings()` (a factory, not a module global) so tests and the Serve config's
`user_config` can layer overrides on top of the environment. A bad value fails fast with a
message that names the variable, instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "DMB_"
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", re.ASCII)
JwtAlgorithm = Literal["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"]
_STORE_SCHEMES: dict[str, tuple[str, ...]] = {
    "database_url": ("postgresql://", "postgres://"),
    "database_replica_url": ("postgresql://", "postgres://"),
    "redis_url": ("redis://", "rediss://", "unix://"),
}


class SettingsError(ValueError):
    """Settings could not be loaded; the message lists every bad variable."""


class Settings(BaseModel):
    """Everything an operator can tune. Unset store URLs mean "start embedded local stores"."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path(".dmb")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Freeze each Ray worker's start-up heap out of the garbage collector's full collections
    # (dmb.gc_pauses): without it a full collection pauses a replica for tens of milliseconds.
    gc_freeze: bool = True
    # A collection at least this long is reported in the process's log (0 reports none).
    gc_slow_pause_ms: int = Field(default=20, ge=0, le=10_000)

    # Stores. None = embedded local store started by `dmb up` (development only).
    database_url: SecretStr | None = None
    database_replica_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    kafka_bootstrap: str | None = None
    database_pool_min: int = Field(default=1, ge=0, le=100)
    database_pool_max: int = Field(default=10, ge=1, le=500)
    store_timeout_seconds: float = Field(default=5.0, gt=0, le=120)

    # JWT. Asymmetric only: verifiers hold public keys, only the user service holds the private one.
    jwt_algorithm: JwtAlgorithm = "EdDSA"
    jwt_private_key: SecretStr | None = None
    jwt_public_keys: dict[str, str] = Field(default_factory=dict)
    jwt_active_kid: str | None = None
    jwt_issuer: str = Field(default="dmb", min_length=1)
    jwt_audience: str = Field(default="dmb-api", min_length=1)
    jwt_access_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    jwt_refresh_ttl_seconds: int = Field(default=30 * 86_400, ge=60, le=365 * 86_400)
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # How long Redis may cache "this access token is not revoked" (the truth is in Postgres;
    # a logout overwrites the entry at once). Bounds the one stale window, see
    # dmb.domain.revocation; each active token costs one primary lookup per this many seconds.
    revocation_cache_seconds: int = Field(default=30, ge=1, le=3_600)
    # How long the username of a deleted account stays taken (nobody can pose as the departed
    # account to those who knew it); 30 days, as Mastodon keeps a deleted account's handle.
    username_hold_seconds: int = Field(default=30 * 86_400, ge=0, le=365 * 86_400)

    # Feed.
    celebrity_threshold: int = Field(default=10_000, ge=1)
    feed_max_length: int = Field(default=800, ge=1, le=100_000)
    # Time to live of a feed set (`feed:<user>`, `posts:<author>`), renewed by every read: the
    # feed of a user who stops reading expires and is rebuilt from Postgres on their next read,
    # so Redis memory follows active readers (docs/OPERATIONS.md, Redis memory policy).
    feed_ttl_seconds: int = Field(default=3 * 86_400, ge=60, le=365 * 86_400)
    fanout_batch_size: int = Field(default=100, ge=1, le=10_000)
    fanout_workers: int = Field(default=4, ge=1, le=1_000)  # in all, shared by the consumers
    feed_consumers: int = Field(default=1, ge=1, le=64)
    kafka_topic_partitions: int = Field(default=8, ge=1, le=1_000)
    # Failed attempts at one change event before it is dead-lettered (dmb.stores.dead_letters).
    feed_event_max_attempts: int = Field(default=5, ge=1, le=1_000)

    # Rate limiting (token buckets).
    rate_limit_user_capacity: int = Field(default=100, ge=1)
    rate_limit_user_refill_per_sec: float = Field(default=10.0, gt=0)
    rate_limit_ip_capacity: int = Field(default=1000, ge=1)
    rate_limit_ip_refill_per_sec: float = Field(default=10.0, gt=0)
    rate_limit_fail_open: bool = True
    # Per-account login backoff (dmb.domain.login_guard): free failures, then doubling locks.
    login_free_failures: int = Field(default=5, ge=1, le=1_000)
    login_backoff_base_seconds: float = Field(default=1.0, gt=0, le=3_600)
    login_backoff_max_seconds: float = Field(default=900.0, gt=0, le=86_400)
    login_failure_window_seconds: int = Field(default=3_600, ge=1, le=86_400)

    # Counters, transport.
    counter_flush_seconds: float = Field(default=1.0, gt=0, le=3_600)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65_535)
    grpc_port: int = Field(default=9000, ge=1, le=65_535)
    max_request_body_bytes: int = Field(default=1_048_576, ge=1_024)
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # Gateway -> service calls (dmb/coalescing.py): at most this many handle
    # calls in flight per service method, requests arriving meanwhile leave together as one
    # call of up to `gateway_coalesce_max_batch`. 0 sends every request as its own handle call.
    gateway_coalesce_in_flight: int = Field(default=4, ge=0, le=1_000)
    gateway_coalesce_max_batch: int = Field(default=64, ge=1, le=1_000)
    # How many proxies in front of the gateway append to X-Forwarded-For (0: use the peer).
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    # Browser origins allowed to call the API (CORS), comma-separated: `https://app.example.com,
    # http://localhost:3000`, or `*` for any. Empty (the default): no cross-origin access.
    cors_allowed_origins: str = ""
    cors_max_age_seconds: int = Field(default=600, ge=0, le=86_400)

    # Tracing (dmb.tracing), off by default. `otlp` exports over OTLP/gRPC to `otel_endpoint`
    # (None: the OTEL_EXPORTER_OTLP_* variables or localhost:4317); `jsonl` writes JSON lines,
    # one file per process, to `otel_spans_dir` (default <data_dir>/spans); `console` prints.
    otel_exporter: Literal["none", "otlp", "jsonl", "console"] = "none"
    otel_endpoint: str | None = None
    otel_sample_ratio: float = Field(default=1.0, ge=0, le=1)  # of new traces; children follow
    otel_service_name: str = Field(default="dmb", min_length=1)
    otel_spans_dir: Path | None = None

    @field_validator("database_url", "database_replica_url", "redis_url")
    @classmethod
    def _store_url_scheme(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if not raw:
            return None
        schemes = _STORE_SCHEMES[info.field_name]
        if not raw.startswith(schemes):
            raise ValueError(f"must start with one of {', '.join(schemes)}")
        return value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for part in (p.strip().rstrip("/") for p in value.split(",")):
            if part and part != "*" and not _ORIGIN.fullmatch(part):
                raise ValueError(f"expected scheme://host[:port] or *, got {part!r}")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_hosts(cls, value: str | None) -> str | None:
        if not value:
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server.strip()!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.database_pool_min > self.database_pool_max:
            raise ValueError("database_pool_min must not exceed database_pool_max")
        if self.http_port == self.grpc_port:
            raise ValueError("http_port and grpc_port must differ")
        if self.feed_consumers > self.fanout_workers:
            raise ValueError("fanout_workers must be at least feed_consumers (one worker each)")
        if self.jwt_active_kid and self.jwt_active_kid not in self.jwt_public_keys:
            raise ValueError("jwt_active_kid must name a key in jwt_public_keys")
        if self.environment == "production":
            missing = [
                f"{ENV_PREFIX}{name.upper()}"
                for name in (
                    "database_url",
                    "redis_url",
                    "kafka_bootstrap",
                    "jwt_private_key",
                    "jwt_active_kid",
                )
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(
                    "production needs external stores and JWT keys; unset: " + ", ".join(missing)
                )
        return self

    @property
    def uses_embedded_stores(self) -> bool:
        """True when no store URL is given, so `dmb up` starts the local stack itself."""
        return not (self.database_url or self.redis_url or self.kafka_bootstrap)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A validated copy with some fields replaced (Serve `user_config`, tests)."""
        return load_settings(environ={}, **{**self._as_inputs(), **overrides})

    def as_environ(self) -> dict[str, str]:
        """The `DMB_*` variables that rebuild these settings in another process (Ray workers).

        Holds secrets: hand it to child processes only, never print or log it.
        """
        environ = {}
        for name, value in self._as_inputs().items():
            if value is None:
                continue
            if isinstance(value, dict):
                encoded = json.dumps(value)
            elif isinstance(value, bool):
                encoded = "true" if value else "false"
            else:
                encoded = str(value)
            environ[f"{ENV_PREFIX}{name.upper()}"] = encoded
        return environ

    def _as_inputs(self) -> dict[str, Any]:
        values = self.model_dump()
        for name, value in values.items():
            if isinstance(value, SecretStr):
                values[name] = value.get_secret_value()
        return values


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from `environ` (default: the process environment) plus explicit overrides.

    Unknown `DMB_*` variables are refused (a typo would otherwise be silently ignored). Raises
    SettingsError with one line per bad variable, named as an operator would set it.
    """
    source = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    unknown = []
    for key, raw in source.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in Settings.model_fields:
            unknown.append(_suggest(key))
            continue
        values[name] = _decode(name, raw)
    if unknown:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(unknown))
    try:
        return Settings.model_validate({**values, **overrides})
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _decode(name: str, raw: str) -> Any:
    """Environment values are strings; structured fields take JSON."""
    if name == "jwt_public_keys":
        try:
            return json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            return f"<not JSON: {exc.msg}>"
    return raw


def _suggest(key: str) -> str:
    known = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{key}: unknown setting{hint}"


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        name = f"{ENV_PREFIX}{location.upper()}" if location else "settings"
        lines.append(f"{name}: {error['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)
