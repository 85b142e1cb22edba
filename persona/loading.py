"""Producing events and products into the input topics with a progress line: what `persona
replay`, `persona catalog import` and the demo load share (persona/cli.py, persona/demo_load.py).
Its own module, so the CLI and the supervisor's demo load do not import each other."""

from __future__ import annotations

from typing import Any

from persona.progress import Progress
from streams.kafka_security import Broker
from streams.produce import ALL_INPUTS, Producer, ensure_topics


async def replay(broker: Broker, partitions: int, events: Any, rate: float | None = None) -> int:
    """Produce `events` (at `rate` events/s, or as fast as the broker takes them); the count."""
    await ensure_topics(broker, partitions, ALL_INPUTS)
    progress = Progress("replay")
    async with Producer(broker) as producer:
        sent = await producer.send_events(events, rate=rate, progress=progress)
    progress.close(sent)
    return sent


async def import_catalog(broker: Broker, partitions: int, products: Any) -> int:
    """Produce `products` into the catalog topic; the count."""
    await ensure_topics(broker, partitions, ALL_INPUTS)
    progress = Progress("catalog import")
    async with Producer(broker) as producer:
        sent = await producer.send_products(products, progress=progress)
    progress.close(sent)
    return sent
