"""Exact end offsets on Tansu, the embedded broker.

Tansu answers ListOffsets(latest) with the base offset of a partition's last record batch + 1, not
with the offset after its last record, whenever that batch holds several records. Faust's table
recovery trusts that figure: it stops reading a changelog early, or refuses to start with a
ConsistencyError when the offset it persisted lies beyond it. A fetch response's high watermark
is right, so for every partition with data we fetch once from the reported end - 1 and take the
larger of the two. It also holds every fetch for the consumer's whole fetch_max_wait (see
`install`). Installed only when the cluster is Tansu; other brokers are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka_security import Broker, as_config

log = logging.getLogger("persona.tansu")

_installed = False
FETCH_MAX_WAIT_MS = 20


async def exact_end_offsets(
    broker: Broker, reported: Mapping[Any, int], timeout_ms: int = 3000
) -> dict[Any, int]:
    """The true end offsets of the partitions in `reported` (ListOffsets answers)."""
    exact = dict(reported)
    todo = {tp: end for tp, end in reported.items() if end and end > 0}
    if not todo:
        return exact
    consumer = AIOKafkaConsumer(
        **as_config(broker).aiokafka(),
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=64 * 1024,
    )
    await consumer.start()
    try:
        tps = {TopicPartition(tp.topic, tp.partition): tp for tp in todo}
        consumer.assign(list(tps))
        for ktp, tp in tps.items():
            consumer.seek(ktp, todo[tp] - 1)
        pending = set(tps)
        for _ in range(10):
            if not pending:
                break
            await consumer.getmany(*pending, timeout_ms=timeout_ms // 10)
            for ktp in list(pending):
                hw = consumer.highwater(ktp)
                if hw is not None:
                    exact[tps[ktp]] = max(todo[tps[ktp]], hw)
                    pending.discard(ktp)
        if pending:
            log.warning("no fetch answer for %s: keeping the reported end offsets", pending)
    finally:
        await consumer.stop()
    return exact


def install(broker: Broker) -> None:
    """Make Faust's consumer ask for exact end offsets (idempotent)."""
    global _installed
    if _installed:
        return
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    original = thread_cls._highwaters

    async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        return await exact_end_offsets(broker, reported)

    thread_cls._highwaters = _highwaters

    # Faust fixes fetch_max_wait_ms at 1,500 ms. Kafka answers a waiting fetch as soon as data
    # arrives; Tansu holds it for the whole wait, so an event sent to an idle partition waited
    # ~750 ms on average before the worker saw it. A short wait keeps freshness in milliseconds.
    create = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, *args: Any, **kwargs: Any) -> Any:
        consumer = create(self, *args, **kwargs)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer
    _installed = True
