"""A plain consumer that reads whole topics from their beginning, outside any consumer group:
the model registry's follower and readers (streams/registry.py) and the retraining's history
read (streams/history.py) share it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka_security import Broker, as_config
from streams.read_committed import ISOLATION_LEVEL

MAX_FETCH = 8 * 1024 * 1024  # bytes per fetch (a registry record holds a whole artifact)


class _Reader(AIOKafkaConsumer):
    """aiokafka's consumer, whose `stop` works also right after `start`: its no-group
    coordinator starts a routine that, cancelled by `stop` before its first step, raises
    CancelledError out of `stop` (a reader of a topic that does not exist yet stopped so, and
    `persona models report` died with a traceback). One turn of the event loop first lets that
    routine start, after which its cancellation is its own."""

    async def stop(self) -> None:
        await asyncio.sleep(0)
        await super().stop()


def topic_reader(broker: Broker) -> AIOKafkaConsumer:
    """A consumer without a group or commits, starting at the earliest offset."""
    return _Reader(
        **as_config(broker).aiokafka(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_FETCH,
        fetch_max_bytes=MAX_FETCH,
        # retraining's history (streams/history.py) reads the input topics: no event of a
        # transaction a shop's producer aborted (streams/read_committed.py)
        isolation_level=ISOLATION_LEVEL,
    )


def assign_all(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Assign every partition of `topics` the started consumer knows of; the partitions (none
    when no topic exists yet)."""
    parts = [
        TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())
    ]
    if parts:
        consumer.assign(parts)
    return parts
