"""Change data capture from Postgres' WAL: read the slot, decode wal2json format-version 2.

The relay reads a logical replication slot with SQL (`pg_logical_slot_peek_changes`), publishes
each change, and only then moves the slot forward (`pg_replication_slot_advance`): at-least-once,
whatever moment the relay dies at. The slot's plugin is wal2json with format-version 2: one JSON
document per change, so no content (quotes, newlines, `new-tuple:`) can confuse the decoder
(`dmb.stores.wal2json`); it is packaged for Debian/Ubuntu and available on RDS. What the relay
does not capture (other tables, TRUNCATE, logical messages) is returned as `Skipped` for the
relay to log and count, and the slot moves past it. `SlotReader` is the relay's one connection;
the envelopes it publishes are defined in `dmb.stores.change_events`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from dmb.stores.change_events import Change
from dmb.stores.wal2json import OPTIONS, PLUGIN, Decoder, Skipped, Transaction

SLOT = "dmb_cdc"
log = logging.getLogger("dmb.cdc")
# "name, value, name, value" for the SQL functions' variadic options argument
_OPTION_ARGS = [item for pair in OPTIONS.items() for item in pair]


@dataclass
class Batch:
    """Whole transactions read from the slot: the changes to publish, what was skipped, and
    where to advance to once the changes are delivered."""

    changes: list[Change] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    last_lsn: str | None = None
    last_commit_ms: int = 0


def decode(rows: Iterable[Sequence[Any]], decoder: Decoder | None = None) -> Batch:
    """Rows of (lsn, data) from pg_logical_slot_peek_changes -> a Batch.

    The slot can advance to a commit, or to a message outside any transaction (a
    non-transactional logical message), never into the middle of a transaction."""
    decoder = decoder or Decoder()
    batch = Batch()
    for lsn, data in rows:
        result = decoder.feed(str(lsn), data)
        if isinstance(result, Transaction):
            batch.changes += result.changes
            batch.last_lsn = result.lsn
            batch.last_commit_ms = result.commit_ms or batch.last_commit_ms
        elif isinstance(result, Skipped):
            batch.skipped.append(result)
        if (
            result is not None
            and not isinstance(result, Transaction)
            and not decoder.in_transaction
        ):
            batch.last_lsn = str(lsn)
    return batch


def ensure_slot(conn: psycopg.Connection[Any], slot: str = SLOT) -> bool:
    """Create the slot unless it exists with the wal2json plugin; True when this call created it.

    A slot left by an older version with another plugin (test_decoding) is dropped and
    recreated: changes it held but had not delivered are lost, which the warning says."""
    row = conn.execute(
        "SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    if row is not None and row[0] == PLUGIN:
        return False
    if row is not None:
        log.warning(
            "replication slot %s uses plugin %s, not %s: dropping and recreating it; changes "
            "it had not delivered are not relayed",
            slot,
            row[0],
            PLUGIN,
        )
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
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
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, NULL, %s, VARIADIC %s)",
            (self.slot, limit, _OPTION_ARGS),
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
