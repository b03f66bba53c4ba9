"""Decoding the 64-bit time-ordered ids that Postgres' `dmb_next_id()` generates.

Layout (see migration 0001): 41 bits of milliseconds since EPOCH, then 12 bits of a global
sequence. Every id is below 2**53, so it is exact as a Redis sorted-set score.
"""

from __future__ import annotations

from datetime import UTC, datetime

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
EPOCH_MS = int(EPOCH.timestamp() * 1000)
SEQUENCE_BITS = 12
MAX_ID = (1 << 53) - 1
ABOVE_EVERY_ID = MAX_ID + 1  # the upper bound of a newest-first list's first page


def timestamp_of(snowflake: int) -> datetime:
    """When the id was generated (millisecond precision)."""
    if not 0 < snowflake <= MAX_ID:
        raise ValueError(f"not a dmb id: {snowflake}")
    millis = (snowflake >> SEQUENCE_BITS) + EPOCH_MS
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def lowest_id_at(moment: datetime) -> int:
    """The smallest id generated at or after `moment` (for time-bounded range queries)."""
    millis = int(moment.timestamp() * 1000) - EPOCH_MS
    if millis < 0:
        raise ValueError(f"{moment.isoformat()} is before the id epoch {EPOCH.isoformat()}")
    return millis << SEQUENCE_BITS
