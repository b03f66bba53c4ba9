"""Decode wal2json format-version 2 messages (one JSON document per change) into `Change`s.

Content cannot confuse it: every value arrives as a JSON string or number, so no keyword in a
post (`new-tuple:`, quotes, newlines) changes how a row is read. What the relay does not capture
(other tables, TRUNCATE, logical messages without a registered prefix) comes back as `Skipped`
so the relay logs and counts it and moves on, never stalls. Logical messages whose prefix is
registered (e.g. trace context from `pg_logical_emit_message(true, 'dmb.trace', ...)`) are
surfaced with the transaction they were written in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dmb.stores.change_events import CAPTURED_TABLES, TRACE_MESSAGE_PREFIX, Change
from dmb.tracing import decode_carrier

PLUGIN = "wal2json"
# Options for START_REPLICATION / pg_logical_slot_*_changes (checked against wal2json 2.5 on
# Postgres 15; logical messages are on by default, "include-messages" is not an option).
OPTIONS = {
    "format-version": "2",
    "include-xids": "1",
    "include-timestamp": "1",
    "include-transaction": "1",
}
_OPS = {"I": "c", "U": "u", "D": "d"}


@dataclass(frozen=True)
class Skipped:
    """A message the relay does not capture: `reason` is the metric label."""

    reason: str
    detail: str


@dataclass(frozen=True)
class LogicalMessage:
    prefix: str
    content: str
    lsn: str
    transactional: bool


@dataclass
class Transaction:
    """One committed transaction: the changes and registered messages it carried."""

    xid: int
    lsn: str = ""
    commit_ms: int = 0
    changes: list[Change] = field(default_factory=list)
    messages: list[LogicalMessage] = field(default_factory=list)


def _row(columns: Iterable[dict[str, Any]] | None) -> dict[str, Any] | None:
    if columns is None:
        return None
    return {column["name"]: column.get("value") for column in columns}


def _millis(timestamp: str | None) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000) if timestamp else 0


class Decoder:
    """Stateful across one replication stream: begin, changes, commit -> one `Transaction`."""

    def __init__(
        self, tables: Iterable[str] = CAPTURED_TABLES, message_prefixes: Iterable[str] = ()
    ) -> None:
        self.tables = frozenset(tables)
        self.message_prefixes = frozenset(message_prefixes)
        self._open: Transaction | None = None

    @property
    def in_transaction(self) -> bool:
        """True between a begin and its commit: the slot must not be advanced to here."""
        return self._open is not None

    def feed(self, lsn: str, payload: str | bytes) -> Transaction | LogicalMessage | Skipped | None:
        """One wal2json v2 message; a `Transaction` at its commit, None while one is open."""
        message = json.loads(payload)
        action = message.get("action")
        if action == "B":
            self._open = Transaction(xid=int(message.get("xid", 0)))
            return None
        if action == "C":
            done, self._open = self._open or Transaction(xid=int(message.get("xid", 0))), None
            done.lsn = lsn
            done.commit_ms = _millis(message.get("timestamp"))
            trace = next(
                (
                    decode_carrier(m.content)
                    for m in done.messages
                    if m.prefix == TRACE_MESSAGE_PREFIX
                ),
                None,
            )
            done.changes = [
                Change(
                    c.lsn, c.xid, c.schema, c.table, c.op, c.before, c.after, done.commit_ms, trace
                )
                for c in done.changes
            ]
            return done
        if action in _OPS:
            return self._change(lsn, message, _OPS[action])
        if action == "M":
            return self._message(lsn, message)
        if action == "T":
            return Skipped("truncate", f"{message.get('schema')}.{message.get('table')}")
        return Skipped("unknown", str(action))

    def _change(self, lsn: str, message: dict[str, Any], op: str) -> Skipped | None:
        table = str(message.get("table"))
        if table not in self.tables:
            return Skipped("table", f"{message.get('schema')}.{table}")
        xid = int(message.get("xid", self._open.xid if self._open else 0))
        before = _row(message.get("identity")) if op in ("u", "d") else None
        after = _row(message.get("columns")) if op in ("c", "u") else None
        change = Change(lsn, xid, str(message.get("schema")), table, op, before, after)
        if self._open is None:  # include-transaction off: a change is its own transaction
            self._open = Transaction(xid=xid)
        self._open.changes.append(change)
        return None

    def _message(self, lsn: str, message: dict[str, Any]) -> LogicalMessage | Skipped | None:
        prefix = str(message.get("prefix", ""))
        if prefix not in self.message_prefixes:
            return Skipped("message", prefix)
        transactional = bool(message.get("transactional"))
        logical = LogicalMessage(prefix, str(message.get("content", "")), lsn, transactional)
        if transactional and self._open is not None:
            self._open.messages.append(logical)
            return None
        return logical
