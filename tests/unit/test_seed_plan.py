"""The seed's graph shape: power-law followers, celebrities above the threshold, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from entrypoints.seed import SeedError, SeedPlan, plan_follows, post_ids_for


def _follows(plan: SeedPlan) -> tuple[np.ndarray, np.ndarray]:
    return plan_follows(plan, np.random.default_rng(plan.seed))


def test_edges_are_unique_and_never_self_follows() -> None:
    followers, followees = _follows(SeedPlan(users=500, follows_per_user=15, celebrities=0))
    assert (followers != followees).all()
    assert len(set(zip(followers.tolist(), followees.tolist(), strict=True))) == len(followers)


def test_follower_counts_are_heavy_tailed() -> None:
    plan = SeedPlan(users=2_000, follows_per_user=20, celebrities=0)
    _, followees = _follows(plan)
    counts = np.sort(np.bincount(followees, minlength=plan.users))[::-1]
    top_one_percent = counts[: plan.users // 100].sum()
    assert top_one_percent > 0.2 * counts.sum()  # a few accounts gather a large share
    assert np.median(counts) < counts.mean()


def test_celebrities_reach_the_threshold() -> None:
    plan = SeedPlan(users=400, celebrities=3, celebrity_threshold=300, follows_per_user=5)
    _, followees = _follows(plan)
    counts = np.bincount(followees, minlength=plan.users)
    assert (counts >= plan.celebrity_threshold).sum() >= plan.celebrities


def test_same_seed_same_graph_other_seed_other_graph() -> None:
    plan = SeedPlan(users=300, celebrities=0)
    first, second = _follows(plan), _follows(plan)
    assert np.array_equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    other = plan_follows(plan, np.random.default_rng(plan.seed + 1))
    assert not np.array_equal(first[1], other[1])


def test_impossible_celebrities_are_refused_with_the_reason() -> None:
    with pytest.raises(SeedError, match="DMB_CELEBRITY_THRESHOLD"):
        SeedPlan(users=100, celebrities=1, celebrity_threshold=10_000).validate()


def test_post_ids_rise_strictly_even_within_one_millisecond() -> None:
    ids = post_ids_for([1_800_000_000_000, 1_800_000_000_000, 1_799_999_999_999])
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
