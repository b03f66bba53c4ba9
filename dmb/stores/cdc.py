"""Change data capture from Postgres' WAL: stream the slot, decode wal2json format-version 2.

The relay streams a logical replication slot over the replication protocol (START_REPLICATION,
as Debezium does), publishes each change, and only then confirms it to Postgres (the stream's
flush position): at-least-once, whatever moment the relay dies at, since a new stream starts
after the last confirmed position. Streaming decodes each WAL record once, where polling with
`pg_logical_slot_peek_changes` set up a decoding context and re-read the WAL from the slot's
restart point on every call, and `pg_replication_slot_advance` decoded it again (on the
2-core machine the relay's Postgres backend was the busiest process after the service replicas:
docs/PERFORMANCE.md). The slot's plugin is wal2json with format-version 2: one JSON document per
change, so no content (quotes, newlines, `new-tuple:`) can confuse the decoder
(`dmb.stores.wal2json`); it is packaged for Debian/Ubuntu and available on RDS. What the relay
does not capture (other tables, TRUNCATE, logical messages) is returned as `Skipped` for the
relay to log and count, and the stream confirms past it. The one logical message it reads is a
traced write's `dmb.trace` (dmb.stores.postgres): its carrier rides on each change of its
transaction. `SlotReader` holds the relay's connections; the envelopes it publishes are defined
in `dmb.stores.change_events`. psycopg 3 has no replication protocol yet; psycopg2's
`LogicalReplicationConnection` is the well-kept client that has it.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from dmb.stores.change_events import TRACE_MESSAGE_PREFIX, Change
from dmb.stores.wal2json import OPTIONS, PLUGIN, Decoder, Skipped, Transaction

SLOT = "dmb_cdc"
log = logging.getLogger("dmb.cdc")


@dataclass
class Batch:
    """Whole transactions read from the slot: the changes to publish, what was skipped, and
    where to confirm up to once the changes are delivered."""

    changes: list[Change] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    last_lsn: str | None = None
    first_commit_ms: int = 0
    last_commit_ms: int = 0

    def take(self, decoder: Decoder, lsn: str, data: str | bytes) -> None:
        """One message of the slot, through `decoder` (which holds an open transaction's
        changes between calls). The confirmed position can move to a commit, or to a message
        outside any transaction (a non-transactional logical message), never into the middle
        of a transaction."""
        result = decoder.feed(lsn, data)
        if isinstance(result, Transaction):
            self.changes += result.changes
            self.last_lsn = result.lsn
            self.first_commit_ms = self.first_commit_ms or result.commit_ms
            self.last_commit_ms = result.commit_ms or self.last_commit_ms
        elif isinstance(result, Skipped):
            self.skipped.append(result)
        if (
            result is not None
            and not isinstance(result, Transaction)
            and not decoder.in_transaction
        ):
            self.last_lsn = lsn


def new_decoder() -> Decoder:
    return Decoder(message_prefixes=(TRACE_MESSAGE_PREFIX,))


def decode(rows: Iterable[Sequence[Any]], decoder: Decoder | None = None) -> Batch:
    """Rows of (lsn, data), as the slot's messages come -> a Batch."""
    decoder = decoder or new_decoder()
    batch = Batch()
    for lsn, data in rows:
        batch.take(decoder, str(lsn), data)
    return batch


def lsn_text(lsn: int) -> str:
    """Postgres' text form of a WAL position (`16/B374D848`), as pg_lsn prints it."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_number(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


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
# The stream's connection: the same keepalives; no statement timeout, which would end it.
_STREAM_CONNECT_OPTIONS = {k: v for k, v in _RELAY_CONNECT_OPTIONS.items() if k != "options"}


# How often an idle stream tells Postgres it is alive (wal_sender_timeout is 60 s by default).
_FEEDBACK_SECONDS = 10


class SlotReader:
    """The relay's two connections to the primary: SQL for the slot's upkeep (`ensure_slot`),
    and the replication stream, started at the first `read` from the slot's confirmed
    position."""

    def __init__(self, database_url: str, slot: str = SLOT) -> None:
        self.slot = slot
        self._url = database_url
        self._conn = psycopg.connect(database_url, autocommit=True, **_RELAY_CONNECT_OPTIONS)
        self._stream: psycopg2.extensions.connection | None = None
        self._cursor: psycopg2.extras.ReplicationCursor | None = None
        self._decoder = new_decoder()

    def ensure_slot(self) -> bool:
        return ensure_slot(self._conn, self.slot)

    def read(self, wait: float = 0.0, limit: int = 2000) -> Batch:
        """The next whole transactions the stream sends (up to about `limit` messages), waiting
        up to `wait` seconds for the first. Nothing is confirmed until `advance`."""
        cursor = self._started()
        batch = Batch()
        deadline = time.monotonic() + wait
        for _ in range(limit):
            message = cursor.read_message()
            while message is None:
                if batch.last_lsn is not None:
                    # Whole transactions in hand and nothing more queued. Skipped messages
                    # alone are no reason to return: inside a transaction they come before
                    # its commit, which the socket may not have handed over yet.
                    return batch
                left = deadline - time.monotonic()
                if left <= 0:
                    self._keep_alive(cursor)
                    return batch
                select.select([cursor], [], [], min(left, _FEEDBACK_SECONDS))
                message = cursor.read_message()
            batch.take(self._decoder, lsn_text(message.data_start), message.payload)
        return batch

    def advance(self, lsn: str) -> None:
        """Confirm everything up to `lsn`: call only once every change up to it is delivered.
        Postgres may then recycle that WAL, and a new stream starts after it."""
        position = lsn_number(lsn)
        cursor = self._started()
        cursor.send_feedback(  # type: ignore[no-untyped-call]  # the stubs leave it untyped
            write_lsn=position, flush_lsn=position, apply_lsn=position, force=True
        )

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._conn.close()

    def _started(self) -> psycopg2.extras.ReplicationCursor:
        if self._cursor is not None:
            return self._cursor
        try:
            stream = psycopg2.connect(
                self._url,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
                **_STREAM_CONNECT_OPTIONS,
            )
        except psycopg2.OperationalError as exc:
            raise StreamUnavailable(f"replication stream: {type(exc).__name__}") from None
        cursor = cast(psycopg2.extras.ReplicationCursor, stream.cursor())
        try:
            cursor.start_replication(
                slot_name=self.slot, decode=True, options=OPTIONS, status_interval=_FEEDBACK_SECONDS
            )
        except psycopg2.errors.ObjectNotInPrerequisiteState as exc:
            stream.close()
            # "can no longer get changes from replication slot": ensure_slot recreates it
            raise SlotInvalidated(f"replication slot {self.slot}: {exc}") from exc
        except BaseException:
            stream.close()
            raise
        self._stream, self._cursor = stream, cursor
        return cursor

    @staticmethod
    def _keep_alive(cursor: psycopg2.extras.ReplicationCursor) -> None:
        idle = time.time() - cursor.feedback_timestamp.timestamp()
        if idle >= _FEEDBACK_SECONDS:
            cursor.send_feedback()  # type: ignore[no-untyped-call]


class StreamUnavailable(RuntimeError):
    """The replication connection could not be opened (the relay's run ends and retries).
    Only the error's class is kept: libpq's text names the server and the user."""


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
