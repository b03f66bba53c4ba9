"""A local system ready to measure: settings for load, a seeded graph, a drained pipeline, and
sessions logged in before any clock starts."""

from __future__ import annotations

import argparse
import random
import time
import urllib.request
from pathlib import Path
from typing import Any

import requests

from dmb.localstack.process import free_port
from dmb.settings import Settings, load_settings
from entrypoints.seed import SeedPlan, run_seed

PASSWORD = "bench-pass-123"  # noqa: S105 - the seeded load-test accounts' password
PREFIX = "bench"


def bench_settings(folder: Path, **overrides: Any) -> Settings:
    """Buckets too large to reject (the limiter still runs on every request), long-lived
    tokens (sessions are logged in once, before every run), a celebrity threshold the seed
    reaches."""
    values: dict[str, Any] = {
        "data_dir": folder,
        "http_port": free_port(),
        "grpc_port": free_port(),
        "jwt_access_ttl_seconds": 3600,
        "rate_limit_ip_capacity": 10**9,
        "rate_limit_ip_refill_per_sec": 10**9,
        "rate_limit_user_capacity": 10**9,
        "rate_limit_user_refill_per_sec": 10**9,
        "celebrity_threshold": 50,
        "database_pool_max": 20,
    }
    return load_settings(environ={}, **{**values, **overrides})


def add_setting_option(parser: argparse.ArgumentParser) -> None:
    """`--setting NAME=VALUE`, repeatable: a setting of dmb.settings for one run (an A/B)."""
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of dmb.settings for this run, e.g. gateway_coalesce_in_flight=1",
    )


def setting_overrides(items: list[str]) -> dict[str, str]:
    """The `--setting` options as bench_settings' overrides."""
    return dict(item.split("=", 1) for item in items)


def wait_ok(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def seed_graph(settings: Settings, users: int, posts: int, celebrities: int = 2) -> dict[str, Any]:
    """The benchmark's social graph: `users` accounts (`celebrities` of them above the
    threshold), `posts` posts, usernames PREFIX0, PREFIX1, ..."""
    assert settings.database_url is not None
    seeded = run_seed(
        settings.database_url.get_secret_value(),
        SeedPlan(
            users=users,
            posts=posts,
            celebrities=celebrities,
            follows_per_user=10,
            celebrity_threshold=settings.celebrity_threshold,
            username_prefix=PREFIX,
        ),
        PASSWORD,
        show_progress=False,
    )
    return dict(seeded.__dict__)


def wait_until_feed_pipeline_idle(quiet_seconds: float = 10, timeout: float = 600) -> float:
    """Wait until the feed pipeline has worked off the seed's backlog (one event per seeded
    post and follow): measuring while it fans out would charge its CPU to the requests.
    Idle = for `quiet_seconds`, the CDC relay published nothing, the consumer handled nothing
    and no batch was in flight (long enough for the relay to decode the seed's big
    transactions). Returns the seconds waited."""
    import ray
    from ray import serve

    from actors import cdc_relay
    from actors.background import NAMESPACE

    relay: Any = ray.get_actor(cdc_relay.NAME, namespace=NAMESPACE)
    supervisor = serve.get_deployment_handle("PipelineSupervisor", app_name="pipeline")
    started = time.monotonic()
    last: tuple[int, int] = (-1, -1)
    quiet_since = time.monotonic()
    while time.monotonic() - started < timeout:
        stats = supervisor.stats.remote().result()
        now = (ray.get(relay.published.remote()), stats["handled"])
        if now != last or stats["in_flight"]:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_seconds:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"the feed pipeline was still busy after {timeout:.0f} s")


def log_in(base: str, accounts: int, count: int) -> list[dict[str, str]]:
    """`count` distinct seeded accounts' sessions, logged in before any clock starts."""
    sessions = []
    for number in random.Random(7).sample(range(accounts), count):
        username = f"{PREFIX}{number}"
        reply = requests.post(
            f"{base}/v1/auth/login", json={"username": username, "password": PASSWORD}, timeout=60
        )
        reply.raise_for_status()
        body = reply.json()
        sessions.append(
            {"username": username, "userId": body["userId"], "accessToken": body["accessToken"]}
        )
    return sessions
