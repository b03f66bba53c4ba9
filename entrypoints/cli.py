"""The `dmb` command: run the system locally, inspect and stop it, migrate, regenerate code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from dmb.composition import configure_logging
from dmb.localstack import StackError, read_state
from dmb.localstack.postgres import PostgresCluster
from dmb.localstack.process import pid_alive, port_open
from dmb.settings import Settings, SettingsError, load_settings

EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    configure_logging(settings)
    try:
        result: int = args.handler(settings, args)
    except StackError as exc:
        print(f"dmb: {exc}", file=sys.stderr)
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmb", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start stores, migrations, Ray and every Serve app")
    up.add_argument("--no-replica", action="store_true", help="skip the read replica")
    up.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="Ray nodes on this machine: the head and NODES-1 worker raylets (default 1)",
    )
    up.add_argument(
        "--default-ingress",
        action="store_true",
        help="use Serve's default proxy instead of the HAProxy ingress (about 10x slower)",
    )
    up.set_defaults(handler=_up)

    down = commands.add_parser("down", help="stop what `dmb up` started")
    down.set_defaults(handler=_down)

    status = commands.add_parser("status", help="show what runs, where, and its logs")
    status.add_argument("--json", action="store_true", help="print the same as one JSON document")
    status.set_defaults(handler=_status)

    migrate = commands.add_parser("migrate", help="apply pending schema migrations")
    migrate.set_defaults(handler=_migrate)

    seed = commands.add_parser("seed", help="bulk-create a realistic social graph")
    seed.add_argument("--users", type=int, default=1_000)
    seed.add_argument("--posts", type=int, default=10_000)
    seed.add_argument("--celebrities", type=int, default=3, help="accounts above the threshold")
    seed.add_argument("--follows-per-user", type=float, default=20.0)
    seed.add_argument("--likes-per-post", type=float, default=3.0)
    seed.add_argument("--comments-per-post", type=float, default=1.0)
    seed.add_argument("--days", type=int, default=30, help="spread posts over this many days")
    seed.add_argument("--seed", type=int, default=42, help="random seed (same seed, same graph)")
    seed.add_argument("--prefix", default="seed", help="usernames are PREFIX0, PREFIX1, ...")
    seed.add_argument(
        "--password-env",
        default="SEED_PASSWORD",
        help="environment variable holding every seeded user's password (default: seed-pass-123)",
    )
    seed.set_defaults(handler=_seed)

    dlq = commands.add_parser("dlq", help="events the feed consumer set aside (dead letters)")
    dlq_commands = dlq.add_subparsers(required=True, metavar="ACTION")
    dlq_list = dlq_commands.add_parser("list", help="show every dead letter, replayed or not")
    dlq_list.add_argument("--json", action="store_true", help="one JSON document")
    dlq_list.set_defaults(handler=_dlq_list)
    dlq_replay = dlq_commands.add_parser(
        "replay", help="send the dead letters not replayed yet back to their topics"
    )
    dlq_replay.set_defaults(handler=_dlq_replay)

    codegen = commands.add_parser("codegen", help="regenerate stubs from proto/")
    codegen.add_argument("--check", action="store_true", help="fail if generated code is stale")
    codegen.set_defaults(handler=_codegen)
    return parser


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from entrypoints.launcher import LocalSystem

    stop_requested = threading.Event()
    print(f"dmb: starting (data in {settings.data_dir.resolve()}) ...", flush=True)
    if args.nodes < 1:
        print("dmb: --nodes must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    system = LocalSystem(
        settings,
        with_replica=not args.no_replica,
        fast_ingress=not args.default_ingress,
        nodes=args.nodes,
    )
    try:
        system.start()
        # Installed after start: ray.init() replaces the SIGTERM handler with one that exits.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop_requested.set())
        _print_summary(system)
        print("dmb: running. Press Ctrl-C (or run `dmb down`) to stop.", flush=True)
        stop_requested.wait()
    finally:
        print("dmb: stopping ...", flush=True)
        system.stop()
        print("dmb: stopped.", flush=True)
    return 0


def _print_summary(system: object) -> None:
    from entrypoints.launcher import LocalSystem

    assert isinstance(system, LocalSystem)
    assert system.stack is not None
    for name, info in system.stack.components().items():
        print(f"  {name:<18} 127.0.0.1:{info['port']:<6} log: {info['log']}")
    for app in system.deployed:
        print(f"  app {app.name:<14} deployed ({app.import_path})")
    addresses = system.addresses()
    print(f"  HTTP  {addresses['http']}")
    print(f"  gRPC  {addresses['grpc']}")


def _down(settings: Settings, args: argparse.Namespace) -> int:
    state = read_state(settings.data_dir.resolve())
    if state is None:
        print("dmb: nothing is running on", settings.data_dir.resolve())
        return 0
    owner = int(state["owner_pid"])
    if pid_alive(owner):
        os.kill(owner, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while pid_alive(owner) and time.monotonic() < deadline:
            time.sleep(0.2)
    leftovers = [owner] if pid_alive(owner) else []
    for info in state.get("components", {}).values():
        pid = info.get("pid")
        if pid and pid_alive(int(pid)):
            leftovers.append(int(pid))
    for pid in leftovers:  # only when a clean stop failed: stop firmly
        os.kill(pid, signal.SIGKILL)
    (settings.data_dir.resolve() / "stack.json").unlink(missing_ok=True)
    print("dmb: stopped" + (f" (had to kill {leftovers})" if leftovers else ""))
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from entrypoints.cluster_status import describe, placement

    state = read_state(settings.data_dir.resolve())
    if state is None or not pid_alive(int(state["owner_pid"])):
        if args.json:
            print(json.dumps({"running": False}))
        else:
            print("dmb: not running (start it with `dmb up`)")
        return EXIT_NOT_RUNNING
    components = {
        name: {
            **info,
            "up": pid_alive(int(info["pid"])) and port_open("127.0.0.1", int(info["port"])),
        }
        for name, info in state.get("components", {}).items()
    }
    ray_state = state.get("ray")
    nodes = placement(ray_state["gcs_address"], ray_state.get("node_ids")) if ray_state else []
    healthy = all(c["up"] for c in components.values()) and all(n.alive for n in nodes)
    if args.json:
        report = {
            "running": True,
            "healthy": healthy,
            "owner_pid": state["owner_pid"],
            "components": components,
            "applications": state.get("applications", []),
            "http": state.get("http"),
            "grpc": state.get("grpc"),
            "ray": ray_state,
            "nodes": [node.as_dict() for node in nodes],
        }
        print(json.dumps(report, indent=2))
        return 0 if healthy else 1
    print(f"dmb: running (pid {state['owner_pid']})")
    for name, info in components.items():
        mark = "up  " if info["up"] else "DOWN"
        print(f"  {mark} {name:<18} 127.0.0.1:{info['port']:<6} log: {info['log']}")
    for app in state.get("applications", []):
        print(f"  app  {app}")
    for key in ("http", "grpc"):
        if key in state:
            print(f"  {key.upper():<5}{state[key]}")
    for line in describe(nodes):
        print(line)
    return 0 if healthy else 1


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from dmb.stores import cdc
    from dmb.stores.migrate import MigrationError, migrate

    url = _database_url(settings)
    try:
        applied = migrate(url)
    except MigrationError as exc:
        print(f"dmb: {exc}", file=sys.stderr)
        return 1
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print("schema is up to date" if not applied else f"{len(applied)} migration(s) applied")
    if cdc.create_slot(url):
        print(f"created the replication slot {cdc.SLOT}")
    return 0


def _database_url(settings: Settings) -> str:
    """DMB_DATABASE_URL, else the primary of the local stack running on the data folder."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    data_dir = settings.data_dir.resolve()
    state = read_state(data_dir)
    primary = (state or {}).get("components", {}).get("postgres-primary")
    if not primary:
        raise StackError("no DMB_DATABASE_URL set and no local stack running (run `dmb up`)")
    cluster = PostgresCluster(data_dir / "postgres", int(primary["port"]), None, run_as=None)
    return cluster.primary_url


def _kafka_bootstrap(settings: Settings) -> str:
    """DMB_KAFKA_BOOTSTRAP, else the broker of the local stack running on the data folder."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    state = read_state(settings.data_dir.resolve())
    broker = (state or {}).get("components", {}).get("broker")
    if not broker:
        raise StackError("no DMB_KAFKA_BOOTSTRAP set and no local stack running (run `dmb up`)")
    return f"127.0.0.1:{broker['port']}"


def _dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    from dmb.stores import dead_letters

    letters = dead_letters.list_dead_letters(_kafka_bootstrap(settings))
    if args.json:
        # `offset` is the event's in its original topic; `dlq_offset` the letter's own.
        listed = [{**x.entry, "dlq_offset": x.offset, "replayed": x.replayed} for x in letters]
        print(json.dumps(listed, indent=2))
        return 0
    if not letters:
        print(f"no dead letters in {dead_letters.TOPIC}")
    for letter in letters:
        entry = letter.entry
        mark = "replayed" if letter.replayed else "pending "
        print(
            f"{letter.offset:>6} {mark} {entry['topic']}[{entry['partition']}]@{entry['offset']} "
            f"after {entry['attempts']} attempts: {entry['error']}"
        )
    return 0


def _dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from dmb.stores import dead_letters

    sent = dead_letters.replay(_kafka_bootstrap(settings))
    for letter in sent:
        entry = letter.entry
        print(f"replayed {letter.offset}: back to {entry['topic']} (was @{entry['offset']})")
    print(f"{len(sent)} dead letter(s) replayed")
    return 0


def _seed(settings: Settings, args: argparse.Namespace) -> int:
    from entrypoints.seed import SeedError, SeedPlan, run_seed

    plan = SeedPlan(
        users=args.users,
        posts=args.posts,
        celebrities=args.celebrities,
        follows_per_user=args.follows_per_user,
        likes_per_post=args.likes_per_post,
        comments_per_post=args.comments_per_post,
        days=args.days,
        seed=args.seed,
        celebrity_threshold=settings.celebrity_threshold,
        username_prefix=args.prefix,
    )
    password = os.environ.get(args.password_env, "seed-pass-123")
    try:
        report = run_seed(
            _database_url(settings), plan, password, show_progress=sys.stderr.isatty()
        )
    except SeedError as exc:
        print(f"dmb: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"seeded {report.users} users, {report.follows} follows, {report.posts} posts, "
        f"{report.likes} likes, {report.comments} comments in {report.seconds:.1f}s; "
        f"celebrities: {len(report.celebrities)} (usernames {args.prefix}N, password from "
        f"${args.password_env} or the default)"
    )
    return 0


def _codegen(settings: Settings, args: argparse.Namespace) -> int:
    from entrypoints.codegen import main as codegen_main

    return codegen_main(check_only=args.check)


if __name__ == "__main__":
    sys.exit(main())
