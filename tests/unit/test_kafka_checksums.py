"""The Kafka client checksums record batches in C, not in its pure-Python fallback.

kafka-python computes the CRC32C of every record batch it produces (the relay) and checks it
on every batch it fetches (each consumer group); without the `crc32c` package it does so in
Python, ~66 us per 700-byte batch, which showed in the feed consumer's profile.
"""

from __future__ import annotations

import os

from kafka.record import util
from kafka.record._crc32c import crc as pure_python_crc32c


def test_the_kafka_client_uses_the_c_checksum() -> None:
    import crc32c  # the `crc32c` extra of kafka-python, a dependency of ours

    assert util.calc_crc32c.__defaults__ == (crc32c.crc32c,)


def test_the_c_checksum_agrees_with_the_reference() -> None:
    for size in (0, 1, 61, 700, 16_384):
        data = memoryview(os.urandom(size))
        assert util.calc_crc32c(data) == pure_python_crc32c(data)
