"""streams/fetch_limit.py (issue 21 item 2): the worker's consumer fetches at most FETCH_MAX_BYTES
of a partition at a time, however deep the backlog, so what it holds of fetched records (decoded
into Python objects) does not grow with it. On the embedded broker, which ignores the
per-partition limit (Faust's 1 MiB) and applies the fetch's limit to each partition instead."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer, TopicPartition

from streams.admin import bootstrap_servers, ensure_topics
from streams.broker import EmbeddedBroker
from streams.fetch_limit import FETCH_MAX_BYTES, install

TOPIC = "fetch-limit-backlog"
VALUE = b"v" * 300
PARTITIONS = 4
RECORDS = PARTITIONS * 8 * FETCH_MAX_BYTES // len(VALUE)  # per partition eight times the limit
BATCH = 256 * 1024  # the producer's largest batch: a fetch may end one batch past the limit


async def _backlog(url: str) -> None:
    await ensure_topics(url, PARTITIONS, [TOPIC])
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(url), linger_ms=5, max_batch_size=BATCH
    )
    await producer.start()
    try:
        sent = [await producer.send(TOPIC, VALUE, partition=n % PARTITIONS) for n in range(RECORDS)]
        await producer.flush()
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _first_fetch(url: str) -> dict[int, int]:
    """Bytes of the records the first fetch of a worker's consumer brings, per partition."""
    app = faust.App("fetch-limit-test", broker=url)
    thread: Any = cast(Any, app.consumer)._thread
    consumer = thread._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        await asyncio.sleep(1.0)  # the fetcher's first answer is in by now
        records = await consumer.getmany(timeout_ms=5000)
        return {tp.partition: sum(len(r.value or b"") for r in got) for tp, got in records.items()}
    finally:
        await consumer.stop()


async def test_a_workers_consumer_fetches_at_most_the_limit_of_a_deep_backlog(
    broker: EmbeddedBroker,
) -> None:
    await _backlog(broker.url)
    install()
    fetched = await _first_fetch(broker.url)
    assert fetched and all(0 < n <= FETCH_MAX_BYTES + BATCH for n in fetched.values()), fetched
