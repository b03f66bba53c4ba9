"""dmb_next_id: a statement cancelled while it holds the id lock must not stall other inserts."""

from __future__ import annotations

import psycopg
import pytest


def test_a_cancelled_id_statement_does_not_leave_the_lock_held(database_url: str) -> None:
    blocker = psycopg.connect(database_url)  # holds the sequence while the victim holds the lock
    victim = psycopg.connect(database_url, autocommit=True)
    other = psycopg.connect(database_url, autocommit=True)
    try:
        # RENAME takes an ACCESS EXCLUSIVE lock on the sequence until ROLLBACK, so the victim
        # takes the id lock, then waits on the sequence, and its statement timeout cancels it
        # there: exactly while the id lock is held.
        blocker.execute("ALTER SEQUENCE dmb_id_seq RENAME TO dmb_id_seq_held")
        victim.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            victim.execute("SELECT dmb_next_id()")
        blocker.rollback()

        # The victim's session is still open (a pooled connection would be): another session
        # must get ids at once, not wait on a lock nobody will release.
        other.execute("SET statement_timeout = '10s'")
        first = other.execute("SELECT dmb_next_id()").fetchone()
        second = other.execute("SELECT dmb_next_id()").fetchone()
        assert first is not None
        assert second is not None
        assert second[0] > first[0]
        # And the victim's own session goes on working too.
        assert victim.execute("SELECT dmb_next_id()").fetchone() is not None
    finally:
        blocker.close()
        victim.close()
        other.close()
