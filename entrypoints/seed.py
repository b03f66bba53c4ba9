"""`dmb seed`: a realistic social graph written in bulk through the real stores.

Power-law follower counts (a few accounts gather most followers), a handful of celebrities
pushed above DMB_CELEBRITY_THRESHOLD, posts spread over past days, likes and comments.
Deterministic for a given seed. Rows go to Postgres with COPY; everything derived (feeds, Redis
counters) is rebuilt by the services from Postgres, and new posts flow through CDC as usual.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import psycopg
from argon2 import PasswordHasher
from numpy.typing import NDArray
from tqdm import tqdm

from dmb.ids import EPOCH_MS, SEQUENCE_BITS

_WORDS = [
    "ray",
    "serve",
    "actor",
    "feed",
    "post",
    "like",
    "comment",
    "follow",
    "graph",
    "cache",
    "redis",
    "kafka",
    "stream",
    "coffee",
    "morning",
    "weekend",
    "launch",
    "deploy",
    "scale",
    "latency",
    "shard",
    "replica",
    "lambda",
    "cluster",
    "cat",
    "dog",
    "music",
    "travel",
    "photo",
    "sunset",
    "city",
    "mountain",
    "river",
    "book",
    "movie",
    "game",
    "team",
]
Int64Array = NDArray[np.int64]


class SeedError(ValueError):
    """The requested sizes cannot be seeded (e.g. too few users for a celebrity)."""


@dataclass(frozen=True)
class SeedPlan:
    users: int = 1_000
    posts: int = 10_000
    celebrities: int = 3
    follows_per_user: float = 20.0
    likes_per_post: float = 3.0
    comments_per_post: float = 1.0
    days: int = 30
    seed: int = 42
    celebrity_threshold: int = 10_000
    username_prefix: str = "seed"
    zipf_exponent: float = 1.1

    def validate(self) -> None:
        if self.users < 2:
            raise SeedError("need at least 2 users")
        if not 0 <= self.celebrities < self.users:
            raise SeedError("celebrities must be fewer than users")
        if self.celebrities and self.celebrity_threshold > self.users - self.celebrities:
            raise SeedError(
                f"a celebrity needs {self.celebrity_threshold} followers (DMB_CELEBRITY_THRESHOLD)"
                f" but only {self.users - self.celebrities} other users exist: seed more users"
                " or lower the threshold"
            )
        if min(self.posts, self.days) < 0 or self.follows_per_user < 0:
            raise SeedError("sizes must not be negative")


@dataclass(frozen=True)
class SeedReport:
    users: int
    follows: int
    posts: int
    likes: int
    comments: int
    celebrities: list[int]
    seconds: float


def plan_follows(plan: SeedPlan, rng: np.random.Generator) -> tuple[Int64Array, Int64Array]:
    """Follow edges as (follower index, followee index), unique, no self-follows.

    Followees are drawn with Zipf-like weights over a random popularity ranking, so follower
    counts follow a power law; the top `celebrities` ranks get at least the threshold.
    """
    n = plan.users
    ranking = rng.permutation(n)
    weights = 1.0 / np.arange(1, n + 1) ** plan.zipf_exponent
    weights /= weights.sum()
    edges = int(n * plan.follows_per_user)
    followers = rng.integers(0, n, size=edges)
    followees = ranking[rng.choice(n, size=edges, p=weights)]
    celebrity_edges = []
    for celebrity in ranking[: plan.celebrities]:
        others = np.setdiff1d(np.arange(n), ranking[: plan.celebrities])
        fans = rng.choice(others, size=min(len(others), plan.celebrity_threshold), replace=False)
        celebrity_edges.append(np.stack([fans, np.full(len(fans), celebrity)]))
    pairs = np.concatenate([np.stack([followers, followees]), *celebrity_edges], axis=1)
    pairs = pairs[:, pairs[0] != pairs[1]]
    unique = np.unique(pairs, axis=1)
    return unique[0].astype(np.int64), unique[1].astype(np.int64)


def post_ids_for(times_ms: Sequence[int]) -> list[int]:
    """Time-ordered ids in dmb_next_id's layout for past timestamps (sorted, strictly rising)."""
    ids: list[int] = []
    previous = 0
    for millis in sorted(times_ms):
        candidate = max(previous + 1, (millis - EPOCH_MS) << SEQUENCE_BITS)
        ids.append(candidate)
        previous = candidate
    return ids


def _sentence(rng: np.random.Generator, low: int, high: int) -> str:
    count = int(rng.integers(low, high))
    return " ".join(str(w) for w in rng.choice(_WORDS, size=count))


def run_seed(
    database_url: str, plan: SeedPlan, password: str, show_progress: bool = True
) -> SeedReport:
    """Write the plan's rows; returns what was written."""
    plan.validate()
    started = time.monotonic()
    rng = np.random.default_rng(plan.seed)
    progress = tqdm(total=5, desc="seeding", unit="step", disable=not show_progress)
    password_hash = PasswordHasher().hash(password)  # one hash: every seeded user shares it
    with psycopg.connect(database_url) as conn:
        user_ids = _insert_users(conn, plan, password_hash)
        progress.update(1)
        follower_idx, followee_idx = plan_follows(plan, rng)
        _copy(
            conn,
            "follows (follower_id, followee_id)",
            zip(user_ids[follower_idx].tolist(), user_ids[followee_idx].tolist(), strict=True),
            len(follower_idx),
            show_progress,
        )
        progress.update(1)
        post_rows = _post_rows(plan, rng, user_ids)
        _copy(conn, "posts (id, author_id, content, created_at)", post_rows, plan.posts, False)
        post_ids = np.array([row[0] for row in post_rows], dtype=np.int64)
        progress.update(1)
        likes = _likes(plan, rng, user_ids, post_ids)
        _copy(conn, "likes (post_id, user_id)", likes, len(likes), False)
        comments = _comments(plan, rng, user_ids, post_ids)
        _copy(conn, "comments (post_id, author_id, content)", comments, len(comments), False)
        progress.update(1)
        _settle_counters(conn, post_ids)
        conn.commit()
        progress.update(1)
    progress.close()
    ranking_followers = np.bincount(followee_idx, minlength=plan.users)
    celebrities = [
        int(user_ids[i]) for i in np.flatnonzero(ranking_followers >= plan.celebrity_threshold)
    ]
    return SeedReport(
        users=len(user_ids),
        follows=len(follower_idx),
        posts=len(post_rows),
        likes=len(likes),
        comments=len(comments),
        celebrities=celebrities,
        seconds=time.monotonic() - started,
    )


def _insert_users(
    conn: psycopg.Connection[tuple[object, ...]], plan: SeedPlan, password_hash: str
) -> Int64Array:
    names = [f"{plan.username_prefix}{i}" for i in range(plan.users)]
    existing = conn.execute(
        "SELECT count(*) FROM users WHERE username = ANY(%s)", (names,)
    ).fetchone()
    if existing and int(str(existing[0])):
        raise SeedError(
            f"users named {plan.username_prefix}0.. already exist: pass another --prefix"
        )
    rows = conn.execute(
        """INSERT INTO users (username, email, password_hash)
           SELECT name, name || '@seed.example', %s FROM unnest(%s::text[]) AS name
           RETURNING id, username""",
        (password_hash, names),
    ).fetchall()
    by_name = {str(name): int(str(user_id)) for user_id, name in rows}
    return np.array([by_name[name] for name in names], dtype=np.int64)


def _post_rows(
    plan: SeedPlan, rng: np.random.Generator, user_ids: Int64Array
) -> list[tuple[int, int, str, datetime]]:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    span_ms = max(1, plan.days * 86_400_000)
    times = (now_ms - rng.integers(1_000, span_ms, size=plan.posts)).tolist()
    ids = post_ids_for(times)
    authors = rng.choice(user_ids, size=plan.posts)
    return [
        (
            post_id,
            int(author),
            _sentence(rng, 3, 30),
            datetime.fromtimestamp(((post_id >> SEQUENCE_BITS) + EPOCH_MS) / 1000, tz=UTC),
        )
        for post_id, author in zip(ids, authors, strict=True)
    ]


def _likes(
    plan: SeedPlan, rng: np.random.Generator, user_ids: Int64Array, post_ids: Int64Array
) -> list[tuple[int, int]]:
    counts = rng.poisson(plan.likes_per_post, size=len(post_ids))
    posts = np.repeat(post_ids, counts)
    likers = rng.choice(user_ids, size=len(posts))
    pairs = np.unique(np.stack([posts, likers]), axis=1)
    return list(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))


def _comments(
    plan: SeedPlan, rng: np.random.Generator, user_ids: Int64Array, post_ids: Int64Array
) -> list[tuple[int, int, str]]:
    counts = rng.poisson(plan.comments_per_post, size=len(post_ids))
    posts = np.repeat(post_ids, counts)
    authors = rng.choice(user_ids, size=len(posts))
    return [
        (int(post), int(author), _sentence(rng, 2, 15))
        for post, author in zip(posts, authors, strict=True)
    ]


def _copy(
    conn: psycopg.Connection[tuple[object, ...]],
    target: str,
    rows: Iterable[Sequence[object]],
    total: int,
    show_progress: bool,
) -> None:
    with conn.cursor().copy(f"COPY {target} FROM STDIN") as copy:
        for row in tqdm(rows, total=total, desc=target.split()[0], disable=not show_progress):
            copy.write_row(row)


def _settle_counters(conn: psycopg.Connection[tuple[object, ...]], post_ids: Int64Array) -> None:
    """Set the stored counters from the rows, as the counter flusher would."""
    conn.execute(
        """UPDATE posts p SET
               like_count = (SELECT count(*) FROM likes l WHERE l.post_id = p.id),
               comment_count = (SELECT count(*) FROM comments c WHERE c.post_id = p.id)
           WHERE p.id = ANY(%s)""",
        (post_ids.tolist(),),
    )
