"""Records sent through an aiokafka producer as whole producer batches.

`producer.send` per record costs a future, a partitioner call, a lookup of the partition's batch
and a callback each: ~15-20 us here, which a worker folding thousands of events a second pays for
every changelog record, popularity contribution and trigger it produces. These build the producer
batches themselves (`create_batch`, `send_batch`): one future per batch. Placement is Kafka's
default partitioner's (`engine.placement`), as `send` would place the keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from engine.placement import partition as default_partition

Records = Iterable[tuple[bytes, bytes | None]]  # (key, value)


async def send_batches(
    producer: Any, topic: str, partition: int, items: Records
) -> list[tuple[asyncio.Future[Any], int]]:
    """Send `items` (key, value) to one partition of `topic` through an aiokafka producer, in
    order, as few producer batches as fit them (no per-record future, callback or partitioner
    call). Returns each batch's future (resolved on the broker's acknowledgement) and its record
    count, once queued in the producer."""
    sent: list[tuple[asyncio.Future[Any], int]] = []
    batch, count = producer.create_batch(), 0
    for key, value in items:
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            sent.append((await producer.send_batch(batch, topic, partition=partition), count))
            batch, count = producer.create_batch(), 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(
                    f"a record of {len(value or b'')} bytes does not fit in a producer batch"
                )
        count += 1
    if count:
        sent.append((await producer.send_batch(batch, topic, partition=partition), count))
    return sent


async def send_keyed(
    producer: Any,
    topic: str,
    records: Records,
    place: Callable[[bytes, int], int] = default_partition,
) -> list[asyncio.Future[Any]]:
    """Send keyed records to `topic`, each to the partition Kafka's default partitioner gives its
    key among the topic's partitions (from the producer's metadata, as `send` finds them), in
    order per partition. Returns the batches' futures, once queued in the producer."""
    partitions = sorted(await producer.client._wait_on_metadata(topic))
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for key, value in records:
        by_partition.setdefault(partitions[place(key, len(partitions))], []).append((key, value))
    futures: list[asyncio.Future[Any]] = []
    for number, items in by_partition.items():
        futures += [future for future, _ in await send_batches(producer, topic, number, items)]
    return futures
