"""A replication slot that Postgres invalidated is dropped and recreated, with a warning naming
the LSN range whose changes were lost (issue 12.2). On a Postgres of its own (no Ray): the
test makes the slot fall behind `max_slot_wal_keep_size`, which the session's stack must not."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from dmb.localstack import scratch_data_dir
from dmb.localstack.postgres import PostgresCluster
from dmb.localstack.process import RunAs, free_port
from dmb.stores import cdc


@pytest.fixture(scope="module")
def small_postgres() -> Iterator[str]:
    folder = scratch_data_dir("dmb-slot-")
    cluster = PostgresCluster(
        root=folder / "postgres",
        primary_port=free_port(),
        replica_port=None,
        run_as=RunAs.for_current_user(),
        fast_unsafe=True,
        # A slot may hold back 1 MB of WAL, and nothing else keeps any: two segment switches
        # and a checkpoint invalidate a slot that does not move.
        extra_settings={"max_slot_wal_keep_size": "1MB", "wal_keep_size": "0"},
    )
    cluster.start()
    try:
        with psycopg.connect(cluster.primary_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE filler (x text)")
        yield cluster.primary_url
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _wal_status(conn: psycopg.Connection[Any], slot: str) -> str | None:
    row = conn.execute(
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    return None if row is None else str(row[0])


def test_an_invalidated_slot_is_recreated_with_a_warning_naming_what_was_lost(
    small_postgres: str, caplog: pytest.LogCaptureFixture
) -> None:
    slot = "dmb_cdc_small"
    assert cdc.create_slot(small_postgres, slot)
    with psycopg.connect(small_postgres, autocommit=True) as conn:
        conn.execute("INSERT INTO filler VALUES ('a change the slot never delivers')")
        for _ in range(4):  # past max_slot_wal_keep_size: the checkpoint invalidates the slot
            conn.execute("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 50)")
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
        assert _wal_status(conn, slot) == "lost"

    reader = cdc.SlotReader(small_postgres, slot)
    try:
        with pytest.raises(cdc.SlotInvalidated):
            reader.read()
        with caplog.at_level(logging.WARNING, logger="dmb.cdc"):
            assert reader.ensure_slot()  # what the relay's next run does
        warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert "invalidated" in warning
        assert "from LSN " in warning
        assert "not relayed" in warning
        assert reader.read(wait=0.5).last_lsn is None  # usable again, from now on
        with psycopg.connect(small_postgres, autocommit=True) as conn:
            assert _wal_status(conn, slot) in ("reserved", "extended")
            conn.execute("INSERT INTO filler VALUES ('after the new slot')")
        assert reader.read(wait=30).last_lsn is not None  # captured again
        assert not reader.ensure_slot()  # a healthy slot is left alone
    finally:
        reader.close()


def test_a_read_waits_for_the_commit_of_a_transaction_the_stream_delivers_in_pieces(
    small_postgres: str,
) -> None:
    """A transaction of uncaptured rows reaches the stream as many messages, which the socket
    hands over in pieces. A read must not end between its begin and its commit: it then had
    nothing to confirm (no `last_lsn`), although the whole transaction was on its way. Seen in
    CI as a read(wait=30) returning after 0 s with one skipped row and no position."""
    slot = "dmb_cdc_pieces"
    assert cdc.create_slot(small_postgres, slot)
    reader = cdc.SlotReader(small_postgres, slot)
    try:
        assert reader.read(wait=0.5).last_lsn is None  # the stream is up, nothing yet
        for attempt in range(5):  # each one a chance for the socket to split the transaction
            with psycopg.connect(small_postgres, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO filler SELECT repeat('y', 200) FROM generate_series(1, 1500)"
                )
            batch = reader.read(wait=30)
            assert batch.last_lsn is not None, f"attempt {attempt}: {len(batch.skipped)} skipped"
            assert len(batch.skipped) == 1500
            reader.advance(batch.last_lsn)
    finally:
        reader.close()
        with psycopg.connect(small_postgres, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
