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
from aiokafka.errors import KafkaError

from engine.catalog import Product
from engine.events import Event, encode
from streams.admin import ALL_INPUTS, bootstrap_servers, ensure_topics
from streams.kafka_security import Broker, as_config

__all__ = ["ALL_INPUTS", "Producer", "SendFailed", "bootstrap_servers", "ensure_topics"]

Progress = Callable[[int], None]
Record = tuple[str, bytes, bytes]  # topic, value, key
PENDING_MAX = 5000  # records handed to the producer and not yet acknowledged, at most


class SendFailed(KafkaError):
    """The broker's `error` part way through a send (it refused a record, or went away): the
    `acknowledged` records before it were taken (`persona replay` says how many). Its text is the
    broker error's; a KafkaError still to those that catch one."""

    def __init__(self, error: KafkaError, acknowledged: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.acknowledged = acknowledged

    def __str__(self) -> str:
        return str(self.error)


async def _acknowledged(pending: list[asyncio.Future[Any]], before: int) -> int:
    """`before` plus the records of `pending` (handed to the producer, cleared here) that the
    broker acknowledged, once each is acknowledged or refused; SendFailed with that count when it
    refused any. Awaited before an error leaves a send too (a bad line of a replayed file: the
    caller says the events before it were sent): aiokafka's `stop()` waits for them, but drops
    their delivery errors."""
    settled = await asyncio.gather(*pending, return_exceptions=True)
    pending.clear()
    taken = before + sum(not isinstance(result, BaseException) for result in settled)
    for result in settled:
        if isinstance(result, KafkaError):
            raise SendFailed(result, taken) from result
        if isinstance(result, BaseException):
            raise result
    return taken


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
        sent = acknowledged = 0
        started = time.monotonic()
        pending: list[asyncio.Future[Any]] = []
        try:
            for topic, value, key in records:
                pending.append(await self._producer.send(topic, value, key=key))
                sent += 1
                if len(pending) >= PENDING_MAX:
                    acknowledged = await _acknowledged(pending, acknowledged)
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if progress and sent % 1000 == 0:
                    progress(sent)
            acknowledged = await _acknowledged(pending, acknowledged)
        except SendFailed:
            raise
        except KafkaError as exc:  # `send` itself refused (metadata never came, say)
            raise SendFailed(exc, await _acknowledged(pending, acknowledged)) from exc
        except Exception:  # the records' source failed: those handed before it acknowledged
            await _acknowledged(pending, acknowledged)
            raise
        if progress:
            progress(sent)
        return acknowledged

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        timestamp_ms: int | None = None,
    ) -> None:
        await (await self._producer.send(topic, value, key=key, timestamp_ms=timestamp_ms))
