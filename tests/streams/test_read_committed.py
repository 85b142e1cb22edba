"""streams/read_committed.py: the worker's consumer asks the broker for committed records only, so
a shop's aborted transactions are never folded, and the plain reader retraining's history reads
the input topics with asks the same (the end-to-end check, which needs a broker that names
aborted transactions, is tests/streams/test_transactional_input.py). Both read uncommitted."""

from __future__ import annotations

from typing import Any, cast

import faust
from aiokafka.consumer.fetcher import READ_COMMITTED

from streams.broker import EmbeddedBroker
from streams.read_committed import ISOLATION_LEVEL, install
from streams.reading import topic_reader


async def test_a_workers_consumer_reads_committed_records_only(broker: EmbeddedBroker) -> None:
    install()
    app = faust.App("read-committed-test", broker=broker.url)
    thread: Any = cast(Any, app.consumer)._thread
    consumer = thread._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        assert consumer._fetcher._isolation_level == READ_COMMITTED
    finally:
        await consumer.stop()


async def test_the_topic_reader_reads_committed_records_only(broker: EmbeddedBroker) -> None:
    """streams/reading.topic_reader: retraining reads the input topics with it (streams/history.py);
    it read uncommitted, so an aborted transaction's events became training data. (The level
    the consumer hands its fetcher when it starts.)"""
    consumer = topic_reader(broker.url)
    assert ISOLATION_LEVEL == "read_committed"
    assert consumer._isolation_level == ISOLATION_LEVEL
