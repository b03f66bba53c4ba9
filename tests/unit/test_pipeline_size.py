"""The pipeline's sizes: the Serve config over settings, and the workers split over consumers."""

from __future__ import annotations

import pytest

from actors.pipeline_size import PipelineSize
from dmb.settings import load_settings


def test_the_serve_config_wins_over_settings() -> None:
    settings = load_settings(environ={"DMB_FANOUT_WORKERS": "6", "DMB_FEED_CONSUMERS": "2"})
    assert PipelineSize.configured(None, settings) == PipelineSize(6, 2)
    assert PipelineSize.configured({"feed_consumers": 3}, settings) == PipelineSize(6, 3)
    assert PipelineSize.configured({"fanout_workers": 9}, settings) == PipelineSize(9, 2)


@pytest.mark.parametrize(
    ("workers", "consumers", "shares"),
    [(4, 1, [4]), (4, 2, [2, 2]), (5, 2, [3, 2]), (7, 4, [2, 2, 2, 1]), (3, 3, [1, 1, 1])],
)
def test_workers_are_split_evenly_and_add_up(
    workers: int, consumers: int, shares: list[int]
) -> None:
    assert PipelineSize(workers, consumers).shares() == shares
    assert sum(PipelineSize(workers, consumers).shares()) == workers


def test_a_consumer_without_a_worker_or_an_unknown_key_is_refused() -> None:
    with pytest.raises(ValueError, match="every consumer needs a worker"):
        PipelineSize(2, 3)
    with pytest.raises(ValueError, match="unknown pipeline settings: fanout_worker"):
        PipelineSize.configured({"fanout_worker": 3}, load_settings(environ={}))
