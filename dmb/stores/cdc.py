"""Change data capture from Postgres' WAL: decode `test_decoding` output into Debezium envelopes.

The relay reads a logical replication slot with SQL (`pg_logical_slot_peek_changes`, since
psycopg 3 cannot stream replication), publishes each change, and only then moves the slot
forward (`pg_replication_slot_advance`): at-least-once, whatever moment the relay dies at.
`test_decoding` ships with Postgres and is available on RDS, so no extension is needed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

SLOT = "dmb_cdc"
PLUGIN = "test_decoding"
TOPIC_PREFIX = "dmb.public."
CAPTURED_TABLES = ("posts", "follows")
PRIMARY_KEYS = {"posts": ("id",), "follows": ("follower_id", "followee_id")}
_INT_TYPES = {"bigint", "integer", "smallint"}
_HEADER = re.compile(r"^table (?P<schema>[^.]+)\.(?P<table>[^:]+): (?P<op>INSERT|UPDATE|DELETE):")
_BEGIN = re.compile(r"^BEGIN (?P<xid>\d+)")
_COMMIT = re.compile(r"^COMMIT (?P<xid>\d+)(?: \(at (?P<at>[^)]+)\))?")
_OPS = {"INSERT": "c", "UPDATE": "u", "DELETE": "d"}


class DecodeError(ValueError):
    """A line of test_decoding output that does not parse."""


@dataclass(frozen=True)
class Change:
    lsn: str
    xid: int
    schema: str
    table: str
    op: str  # c, u, d
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    commit_ms: int = 0

    @property
    def topic(self) -> str:
        return f"{TOPIC_PREFIX}{self.table}"

    @property
    def key(self) -> dict[str, Any]:
        row = self.after if self.after is not None else self.before
        assert row is not None
        return {column: row.get(column) for column in PRIMARY_KEYS[self.table]}

    def envelope(self, database: str = "dmb") -> dict[str, Any]:
        """The Debezium-style event: before, after, op, source{...}, ts_ms."""
        return {
            "before": self.before,
            "after": self.after,
            "op": self.op,
            "source": {
                "connector": "dmb-cdc",
                "db": database,
                "schema": self.schema,
                "table": self.table,
                "lsn": self.lsn,
                "txId": self.xid,
                "ts_ms": self.commit_ms,
            },
            "ts_ms": int(time.time() * 1000),
        }


def _value(type_name: str, raw: str) -> Any:
    if raw == "null":
        return None
    if raw.startswith("'"):
        raw = raw[1:-1].replace("''", "'")
    if type_name in _INT_TYPES:
        return int(raw)
    if type_name == "boolean":
        return raw == "true"
    return raw


def parse_tuple(text: str) -> dict[str, Any]:
    """`name[type]:value name[type]:'quoted ''value'''` -> {name: value}."""
    row: dict[str, Any] = {}
    position = 0
    length = len(text)
    while position < length:
        while position < length and text[position] == " ":
            position += 1
        if position >= length:
            break
        bracket = text.index("[", position)
        name = text[position:bracket]
        close = text.index("]:", bracket)
        type_name = text[bracket + 1 : close]
        position = close + 2
        if position < length and text[position] == "'":
            end = position + 1
            while True:
                end = text.index("'", end)
                if end + 1 < length and text[end + 1] == "'":
                    end += 2
                    continue
                break
            raw = text[position : end + 1]
            position = end + 1
        else:
            end = text.find(" ", position)
            end = length if end == -1 else end
            raw = text[position:end]
            position = end
        row[name] = _value(type_name, raw)
    return row


def parse_change(lsn: str, xid: int, data: str) -> Change | None:
    """One row change, or None for BEGIN/COMMIT and tables we do not capture."""
    header = _HEADER.match(data)
    if header is None:
        if _BEGIN.match(data) or _COMMIT.match(data):
            return None
        raise DecodeError(f"unexpected test_decoding line: {data[:120]!r}")
    table = header["table"]
    if table not in CAPTURED_TABLES:
        return None
    body = data[header.end() :].strip()
    op = _OPS[header["op"]]
    if op == "c":
        return Change(lsn, xid, header["schema"], table, op, None, parse_tuple(body))
    if op == "d":
        return Change(lsn, xid, header["schema"], table, op, parse_tuple(body), None)
    before = None
    if body.startswith("old-key:"):
        old, _, new = body[len("old-key:") :].partition("new-tuple:")
        before, body = parse_tuple(old.strip()), new.strip()
    return Change(lsn, xid, header["schema"], table, op, before, parse_tuple(body))


@dataclass
class Batch:
    """Whole transactions read from the slot: the changes to publish and where to advance to."""

    changes: list[Change] = field(default_factory=list)
    last_lsn: str | None = None
    last_commit_ms: int = 0


def decode(rows: Iterable[Sequence[Any]]) -> Batch:
    """Rows of (lsn, xid, data) from pg_logical_slot_peek_changes -> a Batch."""
    batch = Batch()
    pending: list[Change] = []
    for lsn, xid, data in rows:
        commit = _COMMIT.match(data)
        if commit:
            at = commit["at"]
            commit_ms = int(datetime.fromisoformat(at).timestamp() * 1000) if at else 0
            batch.changes += [
                Change(c.lsn, c.xid, c.schema, c.table, c.op, c.before, c.after, commit_ms)
                for c in pending
            ]
            pending = []
            batch.last_lsn = str(lsn)
            batch.last_commit_ms = commit_ms
            continue
        change = parse_change(str(lsn), int(xid), data)
        if change is not None:
            pending.append(change)
    return batch


def ensure_slot(conn: psycopg.Connection[Any], slot: str = SLOT) -> None:
    row = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    if row.fetchone() is None:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (slot, PLUGIN))


def peek(conn: psycopg.Connection[Any], slot: str = SLOT, limit: int = 2000) -> Batch:
    rows = conn.execute(
        "SELECT lsn::text, xid::text::bigint, data FROM pg_logical_slot_peek_changes("
        "%s, NULL, %s, 'include-xids', '1', 'include-timestamp', '1')",
        (slot, limit),
    ).fetchall()
    return decode(rows)


def advance(conn: psycopg.Connection[Any], lsn: str, slot: str = SLOT) -> None:
    conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn))
