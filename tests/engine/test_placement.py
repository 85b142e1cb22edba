"""engine.placement: the same partition as Kafka's default partitioner (aiokafka's, which follows
the Java client), for any key."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.placement import murmur2, partition


@given(st.binary(max_size=300))
@settings(max_examples=2000)
def test_murmur2_is_kafkas(data: bytes) -> None:
    assert murmur2(data) == reference(data)


def test_partition_is_the_default_partitioners_for_every_length_and_partition_count() -> None:
    rng = random.Random(7)
    place = DefaultPartitioner()
    for _ in range(20_000):
        key = rng.randbytes(rng.randrange(0, 80))
        n = rng.randrange(1, 65)
        every = list(range(n))
        assert partition(key, n) == place(key, every, every)


def test_the_empty_key() -> None:
    assert murmur2(b"") == 275646681 == reference(b"")  # the seed mixed with length 0
