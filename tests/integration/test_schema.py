"""The schema's own guarantees: unique time-ordered ids, exact follow counts, one like per user."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dmb.ids import MAX_ID, timestamp_of


def _new_user(conn: psycopg.Connection[tuple[int]]) -> int:
    name = f"u_{uuid.uuid4().hex[:20]}"
    row = conn.execute(
        "INSERT INTO users (username, email, password_hash) VALUES (%s, %s, 'x') RETURNING id",
        (name, f"{name}@example.com"),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_ids_from_concurrent_connections_never_collide(database_url: str) -> None:
    def draw(_: int) -> list[int]:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT dmb_next_id() FROM generate_series(1, 2000)").fetchall()
            return [int(row[0]) for row in rows]

    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = list(pool.map(draw, range(8)))
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == len(ids)
    assert all(0 < i <= MAX_ID for i in ids)
    for batch in batches:  # within one connection, ids only grow
        assert batch == sorted(batch)


def test_ids_encode_the_time_they_were_made(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT dmb_next_id(), now()").fetchone()
    assert row is not None
    made_at = timestamp_of(int(row[0]))
    assert abs(made_at - row[1].astimezone(UTC)) < timedelta(minutes=5)
    assert made_at.year >= datetime(2025, 1, 1, tzinfo=UTC).year


def test_follow_counts_stay_exact_under_concurrency(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        star = _new_user(conn)
        fans = [_new_user(conn) for _ in range(40)]

    def follow_then_maybe_unfollow(fan: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s)", (fan, star)
            )
            if fan % 2:
                conn.execute(
                    "DELETE FROM follows WHERE follower_id = %s AND followee_id = %s", (fan, star)
                )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(follow_then_maybe_unfollow, fans))
    with psycopg.connect(database_url) as conn:
        stats = conn.execute(
            "SELECT follower_count FROM user_stats WHERE user_id = %s", (star,)
        ).fetchone()
        actual = conn.execute(
            "SELECT count(*) FROM follows WHERE followee_id = %s", (star,)
        ).fetchone()
    assert stats is not None
    assert actual is not None
    assert stats[0] == actual[0] == sum(1 for fan in fans if fan % 2 == 0)


def test_constraints_refuse_bad_rows(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        user = _new_user(conn)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s)", (user, user)
            )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO posts (author_id, content) VALUES (%s, '')", (user,))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO users (username, email, password_hash) "
                "VALUES ('Bad Name', 'a@b.c', 'x')"
            )
        post = conn.execute(
            "INSERT INTO posts (author_id, content) VALUES (%s, 'hi') RETURNING id", (user,)
        ).fetchone()
        assert post is not None
        conn.execute("INSERT INTO likes (post_id, user_id) VALUES (%s, %s)", (post[0], user))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO likes (post_id, user_id) VALUES (%s, %s)", (post[0], user))
