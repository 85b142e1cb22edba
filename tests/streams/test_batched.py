"""streams/batched.py against the real embedded broker: records sent as producer batches land
where Kafka's default partitioner (aiokafka's `send`) would put their keys, on a topic whose
partition count is not the worker's, in order per key; a batch that fills continues in the next."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from streams.admin import bootstrap_servers, ensure_topics
from streams.batched import send_keyed
from streams.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def test_keyed_records_land_on_the_default_partitioners_partition_in_order(
    broker: EmbeddedBroker,
) -> None:
    topic = "batched-keyed-test"
    partitions = 3  # the worker's topics have 4 in the tests: this one does not
    # 40 keys x 50 records of ~1 KB: ~2 MB, several producer batches per partition
    records = [(b"user-%d" % (n % 40), b"%06d" % n + b"x" * 1000) for n in range(2000)]

    async def go() -> dict[bytes, list[tuple[int, bytes]]]:
        await ensure_topics(broker.url, partitions, [topic])
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers(broker.url), max_batch_size=64 * 1024
        )
        await producer.start()
        try:
            futures = await send_keyed(producer, topic, records)
            acks = await asyncio.gather(*futures)
        finally:
            await producer.stop()
        assert len(futures) > partitions  # the batches filled: more than one per partition
        assert all(ack.offset is not None for ack in acks)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers(broker.url),
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        seen: dict[bytes, list[tuple[int, bytes]]] = defaultdict(list)
        try:
            count = 0
            while count < len(records):
                for messages in (await consumer.getmany(timeout_ms=1000)).values():
                    for m in messages:
                        seen[m.key].append((m.partition, m.value))
                        count += 1
        finally:
            await consumer.stop()
        return seen

    seen = asyncio.run(asyncio.wait_for(go(), 60))
    place = DefaultPartitioner()
    every = list(range(partitions))
    assert len({p for got in seen.values() for p, _ in got}) == partitions
    for key, got in seen.items():
        assert {p for p, _ in got} == {place(key, every, every)}, key
        assert [v for _, v in got] == [v for k, v in records if k == key]  # in order
