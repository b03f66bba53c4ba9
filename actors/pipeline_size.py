"""How big the feed pipeline is: the consumers of the change topics, and the fan-out workers
they share, as an operator sets them (the PipelineSupervisor's `user_config`, else settings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dmb.settings import Settings


@dataclass(frozen=True)
class PipelineSize:
    fanout_workers: int  # in all; each consumer owns its share
    feed_consumers: int

    def __post_init__(self) -> None:
        if self.feed_consumers < 1:
            raise ValueError("feed_consumers must be at least 1")
        if self.fanout_workers < self.feed_consumers:
            raise ValueError(
                f"fanout_workers ({self.fanout_workers}) must be at least feed_consumers "
                f"({self.feed_consumers}): every consumer needs a worker"
            )

    @classmethod
    def configured(cls, user_config: Mapping[str, Any] | None, settings: Settings) -> PipelineSize:
        """The Serve config's values where given, the DMB_* settings otherwise."""
        config = user_config or {}
        unknown = set(config) - {"fanout_workers", "feed_consumers"}
        if unknown:
            raise ValueError(f"unknown pipeline settings: {', '.join(sorted(unknown))}")
        return cls(
            fanout_workers=int(config.get("fanout_workers", settings.fanout_workers)),
            feed_consumers=int(config.get("feed_consumers", settings.feed_consumers)),
        )

    def shares(self) -> list[int]:
        """Each consumer's number of fan-out workers: as even as can be, summing to the total."""
        base, extra = divmod(self.fanout_workers, self.feed_consumers)
        return [base + (1 if index < extra else 0) for index in range(self.feed_consumers)]
