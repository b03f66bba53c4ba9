"""Change data capture from Postgres' WAL: read the slot, decode `test_decoding` output.

The relay reads a logical replication slot with SQL (`pg_logical_slot_peek_changes`, since
psycopg 3 cannot stream replication), publishes each change, and only then moves the slot
forward (`pg_replication_slot_advance`): at-least-once, whatever moment the relay dies at.
`test_decoding` ships with Postgres and is available on RDS, so no extension is needed.
`SlotReader` is the relay's one connection; the envelopes it publishes are defined in
`dmb.stores.change_events`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from dmb.stores.change_events import CAPTURED_TABLES, Change

SLOT = "dmb_cdc"
PLUGIN = "test_decoding"
_INT_TYPES = {"bigint", "integer", "smallint"}
_HEADER = re.compile(r"^table (?P<schema>[^.]+)\.(?P<table>[^:]+): (?P<op>INSERT|UPDATE|DELETE):")
_BEGIN = re.compile(r"^BEGIN (?P<xid>\d+)")
_COMMIT = re.compile(r"^COMMIT (?P<xid>\d+)(?: \(at (?P<at>[^)]+)\))?")
_OPS = {"INSERT": "c", "UPDATE": "u", "DELETE": "d"}


class DecodeError(ValueError):
    """A line of test_decoding output that does not parse."""


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


def ensure_slot(conn: psycopg.Connection[Any], slot: str = SLOT) -> bool:
    """Create the slot unless it exists; True when this call created it."""
    row = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    if row.fetchone() is not None:
        return False
    conn.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (slot, PLUGIN))
    return True


class SlotReader:
    """One autocommit connection to the primary that reads the slot and moves it forward."""

    def __init__(self, database_url: str, slot: str = SLOT) -> None:
        self.slot = slot
        self._conn = psycopg.connect(database_url, autocommit=True)

    def ensure_slot(self) -> bool:
        return ensure_slot(self._conn, self.slot)

    def peek(self, limit: int = 2000) -> Batch:
        """The next whole transactions after the slot's position (nothing is consumed)."""
        rows = self._conn.execute(
            "SELECT lsn::text, xid::text::bigint, data FROM pg_logical_slot_peek_changes("
            "%s, NULL, %s, 'include-xids', '1', 'include-timestamp', '1')",
            (self.slot, limit),
        ).fetchall()
        return decode(rows)

    def advance(self, lsn: str) -> None:
        """Forget everything up to `lsn`: call only once every change up to it is delivered."""
        self._conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, lsn))

    def close(self) -> None:
        self._conn.close()


def create_slot(database_url: str, slot: str = SLOT) -> bool:
    """Make sure the slot exists before anything writes: a change committed before the slot's
    creation never reaches Kafka. Run with the migrations (`dmb migrate`, `dmb up`); the relay
    also creates it at start when it is missing. True when this call created it."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        return ensure_slot(conn, slot)
