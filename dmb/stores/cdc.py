"""Change data capture from Postgres' WAL: read the slot, decode wal2json format-version 2.

The relay reads a logical replication slot with SQL (`pg_logical_slot_peek_changes`), publishes
each change, and only then moves the slot forward (`pg_replication_slot_advance`): at-least-once,
whatever moment the relay dies at. The slot's plugin is wal2json with format-version 2: one JSON
document per change, so no content (quotes, newlines, `new-tuple:`) can confuse the decoder
(`dmb.stores.wal2json`); it is packaged for Debian/Ubuntu and available on RDS. What the relay
does not capture (other tables, TRUNCATE, logical messages) is returned as `Skipped` for the
relay to log and count, and the slot moves past it. The one logical message it reads is a traced
write's `dmb.trace` (dmb.stores.postgres): its carrier rides on each change of its transaction.
`SlotReader` is the relay's one connection; the envelopes it publishes are defined in
`dmb.stores.change_events`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from dmb.stores.change_events import TRACE_MESSAGE_PREFIX, Change
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
    first_commit_ms: int = 0
    last_commit_ms: int = 0


def decode(rows: Iterable[Sequence[Any]], decoder: Decoder | None = None) -> Batch:
    """Rows of (lsn, data) from pg_logical_slot_peek_changes -> a Batch.

    The slot can advance to a commit, or to a message outside any transaction (a
    non-transactional logical message), never into the middle of a transaction."""
    decoder = decoder or Decoder(message_prefixes=(TRACE_MESSAGE_PREFIX,))
    batch = Batch()
    for lsn, data in rows:
        result = decoder.feed(str(lsn), data)
        if isinstance(result, Transaction):
            batch.changes += result.changes
            batch.last_lsn = result.lsn
            batch.first_commit_ms = batch.first_commit_ms or result.commit_ms
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


class SlotInvalidated(RuntimeError):
    """Postgres invalidated the slot (it held more WAL than `max_slot_wal_keep_size`): it can
    no longer be read, and the changes it had not delivered are gone from the WAL."""


def ensure_slot(conn: psycopg.Connection[Any], slot: str = SLOT) -> bool:
    """Create the slot unless it exists, usable, with the wal2json plugin; True when this call
    created it.

    Two kinds of slot are dropped and recreated, with a warning saying what was lost: one left
    by an older version with another plugin (test_decoding), and one Postgres invalidated
    (`wal_status = 'lost'`: it held back more WAL than `max_slot_wal_keep_size`). The changes
    such a slot had not delivered, from its confirmed position on, are not relayed."""
    row = conn.execute(
        "SELECT plugin, wal_status, confirmed_flush_lsn::text, pg_current_wal_lsn()::text "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is not None and row[0] == PLUGIN and row[1] != "lost":
        return False
    if row is not None and row[1] == "lost":
        log.warning(
            "replication slot %s was invalidated by Postgres (wal_status lost: it held more WAL "
            "than max_slot_wal_keep_size): dropping and recreating it; the changes committed "
            "from LSN %s up to %s that it had not delivered are not relayed (their posts and "
            "follows never reach the feeds in Redis; a feed rebuilt from Postgres has them)",
            slot,
            row[2],
            row[3],
        )
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    elif row is not None:
        log.warning(
            "replication slot %s uses plugin %s, not %s: dropping and recreating it; changes "
            "it had not delivered (from LSN %s) are not relayed",
            slot,
            row[0],
            PLUGIN,
            row[2],
        )
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    conn.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (slot, PLUGIN))
    return True


# TCP keepalives and a user timeout: after a failover the old primary may vanish without
# closing its sockets; a read on such a connection then fails in seconds instead of hanging.
_RELAY_CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
    "options": "-c statement_timeout=60000",
}


class SlotReader:
    """One autocommit connection to the primary that reads the slot and moves it forward."""

    def __init__(self, database_url: str, slot: str = SLOT) -> None:
        self.slot = slot
        self._conn = psycopg.connect(database_url, autocommit=True, **_RELAY_CONNECT_OPTIONS)

    def ensure_slot(self) -> bool:
        return ensure_slot(self._conn, self.slot)

    def peek(self, limit: int = 2000) -> Batch:
        """The next whole transactions after the slot's position (nothing is consumed)."""
        try:
            rows = self._conn.execute(
                "SELECT lsn::text, data "
                "FROM pg_logical_slot_peek_changes(%s, NULL, %s, VARIADIC %s)",
                (self.slot, limit, _OPTION_ARGS),
            ).fetchall()
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            # "can no longer get changes from replication slot": ensure_slot recreates it
            raise SlotInvalidated(f"replication slot {self.slot}: {exc}") from exc
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


class LagClock:
    """`dmb_cdc_lag_seconds`: how old the oldest change not yet relayed is, growing while the
    relay is stuck (no Postgres, no broker, a crash loop), not frozen at its last value.

    The relay tells it what each pass found; `seconds(now)` is, in this order:
    - the oldest pending change is known (a pass read a batch it has not delivered yet):
      now minus that change's commit time;
    - otherwise now minus the time up to which everything is known to be relayed: the start of
      the last pass that found the slot empty, or the commit time of the last delivered batch,
      whichever is later. With no successful pass at all since `started_at`, that is
      `started_at`: a relay that cannot read the slot reports lag that grows.
    Pure arithmetic on the times it is given (seconds since the epoch)."""

    def __init__(self, started_at: float) -> None:
        self.relayed_up_to = started_at
        self.oldest_pending: float | None = None

    def caught_up(self, pass_started_at: float) -> None:
        """A pass that began at `pass_started_at` found nothing to relay."""
        self.relayed_up_to = max(self.relayed_up_to, pass_started_at)
        self.oldest_pending = None

    def pending(self, first_commit_at: float) -> None:
        """A pass read changes, the oldest committed at `first_commit_at`, not yet delivered."""
        if first_commit_at > 0 and self.oldest_pending is None:
            self.oldest_pending = first_commit_at

    def relayed(self, last_commit_at: float) -> None:
        """A batch was delivered and the slot advanced past changes committed up to then."""
        self.relayed_up_to = max(self.relayed_up_to, last_commit_at)
        self.oldest_pending = None

    def seconds(self, now: float) -> float:
        since = self.oldest_pending if self.oldest_pending is not None else self.relayed_up_to
        return max(0.0, now - since)
