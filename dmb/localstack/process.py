"""Child processes that cannot outlive us, with logs on disk and readable start-up failures.

Every store of the local stack is one `ManagedProcess`: started in its own session (so a
terminal's Ctrl-C reaches only `dmb up`, which then stops them in order), with a
parent-death signal so that a killed parent never leaves orphans behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A local store failed to start or answer; the message says which, why and where the log is."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask the kernel to SIGTERM this child when the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_SINGLE_PORTS = (30_000, 32_767)  # below the ephemeral range, above `free_port_range`'s
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, chosen at random below Linux's ephemeral range.

    A port the kernel picks (bind to port 0) comes from the ephemeral range, which every
    outgoing connection and every Ray gRPC server draws from too: between the pick and the
    moment a slow-starting server (HAProxy after Ray is up) binds it, one of them could take it.
    Ports outside that range are only taken by someone who chose them on purpose. A port is
    never handed out twice by one process."""
    first, last = _SINGLE_PORTS
    candidates = [port for port in range(first, last + 1) if port not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        if _bindable(port) and _bindable_on(host, port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port between {first} and {last}")


def free_port_range(size: int, first: int = 21_000, last: int = 29_999) -> int:
    """The first port of `size` consecutive ports nothing listens on, on any address, chosen at
    random between `first` and `last` (below Linux's ephemeral range and above Ray's worker
    ports). A plain bind to the wildcard address fails where any socket listens, even one
    bound with SO_REUSEPORT, which is what makes the check trustworthy."""
    slots = list(range(first, last - size + 2, size))
    random.shuffle(slots)
    for base in slots:
        if all(_bindable(port) for port in range(base, base + size)):
            return base
    raise RuntimeError(f"no {size} free consecutive ports between {first} and {last}")


def _bindable_on(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("::", port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log written)"
    return "\n".join(f"    | {line}" for line in text[-lines:]) or "    | (log is empty)"


@dataclass
class RunAs:
    """An unprivileged account to run a server as (Postgres refuses to run as root)."""

    user: str
    uid: int
    gid: int

    @classmethod
    def for_current_user(cls) -> RunAs | None:
        """None when we are not root: run as ourselves. As root: a system account."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "dmb"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(name, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "dmb"],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam("dmb")
        return cls("dmb", entry.pw_uid, entry.pw_gid)

    def own(self, path: Path) -> None:
        """Give `path` (recursively) to this account."""
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(Path(root) / name, self.uid, self.gid)
        os.chown(path, self.uid, self.gid)

    def check_reachable(self, path: Path) -> None:
        """Fail clearly when the account cannot traverse the folders leading to `path`."""
        for parent in [*reversed(path.resolve().parents)]:
            mode = parent.stat()
            if mode.st_uid == self.uid:
                continue
            if not mode.st_mode & 0o001:
                raise StackError(
                    f"Postgres runs as the unprivileged user {self.user!r}, who cannot enter "
                    f"{parent}. Put the data folder (DMB_DATA_DIR) under a path every user can "
                    "traverse, e.g. /tmp or /srv."
                )


@dataclass
class ManagedProcess:
    """One child process: start, wait until ready, stop politely then firmly."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    run_as: RunAs | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        if self.run_as:
            os.chown(self.log_path, self.run_as.uid, self.run_as.gid)
        try:
            self._proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                user=self.run_as.uid if self.run_as else None,
                group=self.run_as.gid if self.run_as else None,
                extra_groups=[] if self.run_as else None,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise StackError(f"{self.name}: could not run {self.argv[0]}: {exc}") from exc
        finally:
            log.close()

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `probe` until it answers True; fail with the log's tail if the child dies/stalls."""
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise StackError(
                    f"{self.name} exited with code {self._proc.returncode} while starting "
                    f"({what}). Log: {self.log_path}\n{log_tail(self.log_path)}"
                )
            try:
                if probe():
                    return
            except Exception as exc:  # any probe failure means "not ready yet"
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        self.stop()
        raise StackError(
            f"{self.name} did not become ready within {timeout:.0f}s ({what}; last probe: "
            f"{last_error}). Log: {self.log_path}\n{log_tail(self.log_path)}"
        )

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Signal the child's whole process group, escalate to SIGKILL, and reap it."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, self.stop_signal)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def run_checked(
    argv: Sequence[str],
    what: str,
    log_path: Path,
    run_as: RunAs | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> None:
    """Run a one-shot command (initdb, pg_basebackup), appending its output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        if run_as:
            os.chown(log_path, run_as.uid, run_as.gid)
        try:
            result = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"{what} failed: {exc}. Log: {log_path}") from exc
    if result.returncode != 0:
        raise StackError(
            f"{what} failed with code {result.returncode}. Log: {log_path}\n{log_tail(log_path)}"
        )
