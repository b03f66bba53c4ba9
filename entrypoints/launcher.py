"""The system on one machine: local stores, migrations and the CDC slot, a Ray cluster, and
every Serve application (which in turn starts the pipeline's actors: serve_apps.pipeline).

`dmb up`, the integration tests and the benchmarks all start the system through `LocalSystem`,
so what is tested is what runs. Entrypoints sit above every other layer; nothing imports them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.cdc_relay import recover_if_the_broker_lost_its_data
from dmb.composition import Components
from dmb.localstack import LocalStack
from dmb.localstack.process import free_port, free_port_range
from dmb.settings import Settings
from dmb.stores import cdc
from dmb.stores.change_events import CAPTURED_TOPICS
from dmb.stores.kafka import ensure_topics
from dmb.stores.migrate import migrate
from entrypoints.ray_cluster import LocalRayCluster
from serve_apps.topology import APPLICATIONS, AppSpec, local_serve_config

log = logging.getLogger(__name__)
# Serve's background work, sized for a laptop or this 2-core machine, where every process of
# the system shares the cores with the stores: the controller's loop runs every 0.5 s instead of
# 0.1 s, and replicas and handles hand their cached metrics to Ray every second instead of ten
# times a second. Measured idle with nothing else running (docs/PERFORMANCE.md, "The levers,
# measured one by one"): the controller's CPU fell from 4.7% to 1.6% of a core. The
# KubeRay manifests keep Ray's defaults: there the controller has a core of the head node.
#
# And HAProxy's per-request metrics go: with them on, HAProxy writes a log line for every request
# to a socket that the HAProxyManager actor parses in Python (~60 us of CPU a request, 1.7% of
# this machine under the full mix). A local system has no Prometheus, and the gateway's own
# `dmb_http_requests_total` and `dmb_http_request_seconds` count the same requests; the cluster
# keeps them (its dashboard reads `ray_serve_num_http_requests_total`, which also counts what
# HAProxy answers without a replica).
#
# A stopping ingress replica stays reachable for Ray's 30 s deregistration window before it
# refuses new connections (which HAProxy retries on another replica): time for a load balancer in
# front of a cluster. Here HAProxy is on the same machine and reloads in well under a second, so
# 2 s; with 30, every `dmb down` and every test or benchmark run waited half a minute for nothing.
LOCAL_SERVE_TUNING = {
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
_GRPC_PORTS = 64  # direct-ingress gRPC ports per system: one per ingress replica, with room


def ingress_folder(data_dir: Path) -> Path:
    """HAProxy's config, sockets and state for the system whose stores live in `data_dir`:
    short and in /tmp (`LocalSystem._fast_ingress_environ` says why), removed by `stop()`."""
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"dmb-hap-{digest}"


@dataclass
class LocalSystem:
    """Stores + migrations + Ray + Serve. Use as a context manager; `stop()` undoes `start()`."""

    settings: Settings
    with_replica: bool = True
    fast_unsafe: bool = False
    start_serve: bool = True
    ray_cpus: int | None = None
    fast_ingress: bool = True
    applications: tuple[AppSpec, ...] = APPLICATIONS
    nodes: int = 1
    stack: LocalStack | None = field(default=None, init=False)
    resolved: Settings | None = field(default=None, init=False)
    deployed: tuple[AppSpec, ...] = field(default=(), init=False)
    cluster: LocalRayCluster | None = field(default=None, init=False)

    def __enter__(self) -> LocalSystem:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Settings:
        try:
            self.stack = LocalStack(self.settings, self.with_replica, self.fast_unsafe)
            self.resolved = self.stack.start()
            prepare_stores(self.resolved)
            if self.start_serve:
                self.serve()
            else:
                self.stack.write_state()
        except BaseException:
            self.stop()
            raise
        return self.resolved

    def serve(self) -> None:
        """Start Ray and deploy every Serve application (idempotent)."""
        if self.cluster is not None:
            return
        assert self.stack is not None
        assert self.resolved is not None
        self._start_ray()
        self._deploy()
        self.write_state()

    def write_state(self) -> None:
        """What runs where, for `dmb status` and `dmb down`."""
        assert self.stack is not None
        extra: dict[str, Any] = {"applications": [app.name for app in self.deployed]}
        if self.cluster is not None:
            extra.update(self.addresses(), ray=self.cluster.describe())
        self.stack.write_state(**extra)

    def stop(self) -> None:
        if self.cluster is not None:
            from ray import serve

            from actors.supervisor import stop_pipeline

            try:
                serve.shutdown()  # type: ignore[no-untyped-call]
                stop_pipeline()
            finally:
                self.cluster.stop()
                self.cluster = None
        if self.stack is not None:
            shutil.rmtree(ingress_folder(self.stack.data_dir), ignore_errors=True)
            self.stack.stop()
            self.stack = None

    def _start_ray(self) -> None:
        assert self.resolved is not None
        assert self.stack is not None
        # Workers inherit the driver's environment: settings (secrets included) reach every
        # replica this way without passing through runtime_env, which Ray records and shows.
        os.environ.update(self.resolved.as_environ())
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # one mode for every process
        for name, value in LOCAL_SERVE_TUNING.items():
            os.environ.setdefault(name, value)  # an operator's own value wins
        if self.fast_ingress:
            os.environ.update(self._fast_ingress_environ())
        cluster = LocalRayCluster(self.nodes, self.stack.data_dir / "ray", self.ray_cpus)
        cluster.start()
        self.cluster = cluster

    def _fast_ingress_environ(self) -> dict[str, str]:
        """Ray 2.60's HAProxy ingress, with its files in a folder of this system's own.

        Its defaults put config, sockets and state in /tmp/haproxy-serve, shared by every
        cluster on the machine (tests and `dmb up` would overwrite each other's). The folder is
        short and in /tmp because Ray adds a 56-character node id below it and HAProxy refuses
        socket paths over 97 characters. Its stats and metrics listeners default to fixed ports
        (8404, 9101) on every address, so a second system on the machine (tests beside `dmb up`)
        could not start: they get free ports too.

        Each ingress replica's own gRPC server takes a port counting up from 40000 on every
        cluster, and Ray 2.60 asks gRPC for `grpc.so_reuseport` as the string "0", which gRPC
        ignores, so two clusters on one machine both bind 40000 and the kernel shares the
        connections: HAProxy then reaches the other cluster's replicas ("Application 'posts' not
        found", "signed with an unknown key"). So each system gets a port range of its own.

        HAProxy's backup server for every app is Serve's fallback proxy actor, on fixed ports
        (8500 HTTP, 9500 gRPC) bound with SO_REUSEPORT: a request HAProxy sent to the backup
        (a replica not yet marked up, or marked down) could be answered by another system's
        proxy, which registered a user in the other system's database (the tracing test, CI
        of 2026-12-07: "user ... does not exist" on a follow of a user just registered). Those
        get ports of this system's own as well.
        """
        assert self.stack is not None
        base = ingress_folder(self.stack.data_dir)
        base.mkdir(mode=0o700, exist_ok=True)
        grpc_ports = free_port_range(_GRPC_PORTS)
        return {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_ports),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_ports + _GRPC_PORTS - 1),
        }

    def reconfigure(self, app: str, deployment: str, user_config: dict[str, Any]) -> None:
        """Give one deployment a new `user_config` through an edited Serve config, as an
        operator would: its replicas reconfigure in place ({} puts the settings' values back)."""
        self._deploy({app: [{"name": deployment, "user_config": user_config}]})

    def _deploy(self, deployments: dict[str, list[dict[str, Any]]] | None = None) -> None:
        from ray.serve._private.api import serve_start
        from ray.serve.schema import ServeDeploySchema

        assert self.resolved is not None
        config = ServeDeploySchema.model_validate(
            local_serve_config(
                self.resolved.http_host,
                self.resolved.http_port,
                self.resolved.grpc_port,
                self.applications,
                deployments,
                nodes=self.nodes,
            )
        )
        # The declarative path KubeRay uses (serveConfigV2), so local and cluster share one format.
        client = serve_start(
            http_options=config.http_options.model_dump(),
            grpc_options=config.grpc_options.model_dump(),
            proxy_location=config.proxy_location,
        )
        client.deploy_apps(config)
        wait_until_running({app.name for app in config.applications}, DEPLOY_DEADLINE_SECONDS)
        client.wait_for_proxies_serving(wait_for_applications_running=True)
        self.deployed = self.applications

    def addresses(self) -> dict[str, Any]:
        assert self.resolved is not None
        return {
            "http": f"http://{self.resolved.http_host}:{self.resolved.http_port}",
            "grpc": f"127.0.0.1:{self.resolved.grpc_port}",
        }


# Serve's own blocking deploy gives up after a fixed 60 s; on a loaded two-core machine starting
# three raylets and a dozen replicas can take longer, so we wait ourselves, longer, and say which
# application is not running (and why) when we give up.
DEPLOY_DEADLINE_SECONDS = 300.0


def wait_until_running(app_names: set[str], deadline_seconds: float) -> None:
    """Return once every named Serve application is RUNNING; fail fast on DEPLOY_FAILED."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    give_up = time.monotonic() + deadline_seconds
    while True:
        apps = serve.status().applications
        waiting = {name: apps[name] for name in app_names if name in apps}
        failed = [
            f"{name}: {app.message}"
            for name, app in waiting.items()
            if app.status == ApplicationStatus.DEPLOY_FAILED
        ]
        if failed:
            raise RuntimeError("Serve applications failed to deploy: " + "; ".join(failed))
        pending = sorted(
            app_names - {n for n, a in waiting.items() if a.status == ApplicationStatus.RUNNING}
        )
        if not pending:
            return
        if time.monotonic() > give_up:
            raise TimeoutError(
                f"Serve applications not running after {deadline_seconds:.0f} s: {pending}"
            )
        time.sleep(0.5)


def prepare_stores(settings: Settings) -> None:
    """Before anything writes: the migrations and the CDC slot (`dmb migrate` does the same),
    and the change topics with their partitions (the relay also makes sure of them)."""
    assert settings.database_url is not None
    assert settings.kafka_bootstrap is not None
    database_url = settings.database_url.get_secret_value()
    migrate(database_url)
    if cdc.create_slot(database_url):
        log.info("created the replication slot %s", cdc.SLOT)
    ensure_topics(settings.kafka_bootstrap, CAPTURED_TOPICS, settings.kafka_topic_partitions)
    asyncio.run(_recover_feed_caches(settings))


async def _recover_feed_caches(settings: Settings) -> None:
    """What the relay does when it finds a broker that is new or lost its data, done before
    anything reads a feed: done by the relay alone, it raced the first readers, whose feeds
    (built after the broker came up, so complete) it dropped, and fan-out skips a feed that
    does not exist."""
    assert settings.kafka_bootstrap is not None
    components = Components(settings)
    try:
        await components.ready()
        await recover_if_the_broker_lost_its_data(settings.kafka_bootstrap, components.feed_writer)
    finally:
        await components.close()
