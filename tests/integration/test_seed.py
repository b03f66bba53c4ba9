"""`dmb seed` against the real Postgres: rows, counts and celebrities as planned."""

from __future__ import annotations

import uuid

import psycopg
from argon2 import PasswordHasher

from entrypoints.seed import SeedPlan, run_seed


def test_seed_writes_a_consistent_graph(database_url: str) -> None:
    prefix = f"s{uuid.uuid4().hex[:6]}_"
    plan = SeedPlan(
        users=300,
        posts=400,
        celebrities=2,
        celebrity_threshold=150,
        follows_per_user=4,
        username_prefix=prefix,
    )
    report = run_seed(database_url, plan, "pw-for-seeded-users", show_progress=False)
    assert report.users == 300
    assert len(report.celebrities) >= 2
    with psycopg.connect(database_url) as conn:
        users = conn.execute(
            "SELECT id, password_hash FROM users WHERE username LIKE %s", (prefix + "%",)
        ).fetchall()
        ids = [row[0] for row in users]
        assert len(ids) == 300
        assert PasswordHasher().verify(users[0][1], "pw-for-seeded-users")
        follows = conn.execute(
            "SELECT count(*) FROM follows WHERE follower_id = ANY(%s)", (ids,)
        ).fetchone()
        assert follows == (report.follows,)
        for celebrity in report.celebrities:
            stats = conn.execute(
                "SELECT follower_count FROM user_stats WHERE user_id = %s", (celebrity,)
            ).fetchone()
            assert stats is not None
            assert stats[0] >= 150
        drift = conn.execute(
            """SELECT count(*) FROM posts p WHERE p.author_id = ANY(%s) AND (
                   p.like_count <> (SELECT count(*) FROM likes l WHERE l.post_id = p.id) OR
                   p.comment_count <> (SELECT count(*) FROM comments c WHERE c.post_id = p.id))""",
            (ids,),
        ).fetchone()
        assert drift == (0,)
        posts = conn.execute(
            "SELECT count(*) FROM posts WHERE author_id = ANY(%s)", (ids,)
        ).fetchone()
        assert posts == (400,)
