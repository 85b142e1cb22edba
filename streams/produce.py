"""Producing into Persona's topics from tools (replay, catalog import) with plain aiokafka.

Events are keyed by user id and placed by Kafka's default (murmur2) partitioner, so they take the
direct path through the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

from engine.catalog import Product
from engine.events import Event, encode
from streams.admin import ALL_INPUTS, bootstrap_servers, ensure_topics
from streams.kafka_security import Broker, as_config

__all__ = ["ALL_INPUTS", "Producer", "bootstrap_servers", "ensure_topics"]

Progress = Callable[[int], None]
Record = tuple[str, bytes, bytes]  # topic, value, key
PENDING_MAX = 5000  # records handed to the producer and not yet acknowledged, at most


async def _acknowledged(pending: list[asyncio.Future[Any]]) -> None:
    """Wait for the records handed to the producer before their source failed (a bad line of a
    replayed file: the caller says they were sent): the broker's error instead when it did not
    take them. aiokafka's `stop()` waits for them too, but drops their delivery errors."""
    await asyncio.gather(*pending)


class Producer:
    def __init__(self, broker: Broker) -> None:
        self._producer = AIOKafkaProducer(
            **as_config(broker).aiokafka(),
            linger_ms=5,
            max_batch_size=256 * 1024,
            acks=1,
        )

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._producer.stop()

    async def send_events(
        self,
        events: Iterable[Event],
        rate: float | None = None,
        progress: Progress | None = None,
        fmt: str = "msgpack",
    ) -> int:
        records = ((e.topic(), encode(e, fmt), e.user_id.encode()) for e in events)
        return await self._send_bounded(records, rate, progress)

    async def send_products(
        self, products: Iterable[Product], progress: Progress | None = None
    ) -> int:
        records = (("catalog", p.pack(), p.item_id.encode()) for p in products)
        return await self._send_bounded(records, None, progress)

    async def _send_bounded(
        self, records: Iterable[Record], rate: float | None, progress: Progress | None
    ) -> int:
        """Produce `records` (at `rate` records/s when given) with at most PENDING_MAX of them
        unacknowledged at a time (a file or feed of millions of rows: bounded memory); the count."""
        sent = 0
        started = time.monotonic()
        pending: list[asyncio.Future[Any]] = []
        try:
            for topic, value, key in records:
                pending.append(await self._producer.send(topic, value, key=key))
                sent += 1
                if len(pending) >= PENDING_MAX:
                    await asyncio.gather(*pending)
                    pending.clear()
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if progress and sent % 1000 == 0:
                    progress(sent)
        except Exception:
            await _acknowledged(pending)
            raise
        await asyncio.gather(*pending)
        if progress:
            progress(sent)
        return sent

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        timestamp_ms: int | None = None,
    ) -> None:
        await (await self._producer.send(topic, value, key=key, timestamp_ms=timestamp_ms))
