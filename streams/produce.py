"""Producing into Persona's topics from tools (replay, catalog import) with plain aiokafka.

Events are keyed by user id and placed by Kafka's default (murmur2) partitioner, so they take the
direct path through the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from engine.catalog import Product
from engine.events import INPUT_TOPICS, Event, encode

Progress = Callable[[int], None]


def bootstrap_servers(broker_url: str) -> str:
    """`kafka://a:9092;kafka://b:9092` -> `a:9092,b:9092`."""
    return ",".join(part.split("://", 1)[-1] for part in broker_url.split(";") if part)


async def ensure_topics(broker_url: str, partitions: int, names: Iterable[str]) -> None:
    """Create the named topics with `partitions` partitions where they do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(broker_url))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
    finally:
        await admin.close()


class Producer:
    def __init__(self, broker_url: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers(broker_url),
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
        sent = 0
        started = time.monotonic()
        pending: list[asyncio.Future[Any]] = []
        for event in events:
            fut = await self._producer.send(
                event.topic(), encode(event, fmt), key=event.user_id.encode()
            )
            pending.append(fut)
            sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if progress and sent % 1000 == 0:
                progress(sent)
        await asyncio.gather(*pending)
        if progress:
            progress(sent)
        return sent

    async def send_products(
        self, products: Iterable[Product], progress: Progress | None = None
    ) -> int:
        sent = 0
        pending: list[asyncio.Future[Any]] = []
        for product in products:
            pending.append(
                await self._producer.send("catalog", product.pack(), key=product.item_id.encode())
            )
            sent += 1
            if progress and sent % 1000 == 0:
                progress(sent)
        await asyncio.gather(*pending)
        if progress:
            progress(sent)
        return sent

    async def send_raw(self, topic: str, value: bytes | None, key: bytes | None) -> None:
        await (await self._producer.send(topic, value, key=key))


ALL_INPUTS = (*INPUT_TOPICS, "catalog")


async def is_tansu(broker_url: str, timeout: float = 10.0) -> bool:
    """Whether the cluster is Tansu (the embedded broker), whose end offsets need care."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(broker_url), request_timeout_ms=int(timeout * 1000)
    )
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    return "tansu" in str(cluster.get("cluster_id") or "").lower()
