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
