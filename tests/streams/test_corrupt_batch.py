"""A record batch whose CRC does not match, on an input topic. Kafka refuses such a batch at
produce time (CORRUPT_MESSAGE); the embedded broker (Tansu) stores it as sent. aiokafka checks the
CRC when it reads the batch and raised CorruptRecordException out of the worker's fetcher: the
worker exited, and every restart stopped on the same batch, forever, folding nothing on any
partition. One producer with a flipped bit (a buggy client, bad memory, a hostile one) stopped
the engine.

The corrupt batch is made here with aiokafka's producer, its last byte flipped after the batch
(and its CRC) was built; a real broker and worker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.producer import message_accumulator

from streams.admin import bootstrap_servers
from tests.conftest import Worker, metric, wait_until
from tests.streams.test_hostile_records import (
    dead_letters,
    own_worker,  # noqa: F401 (a fixture)
    profile_events,
)

pytestmark = pytest.mark.integration
confluent_kafka = pytest.importorskip("confluent_kafka")

NOW = (int(time.time()) // 60 - 5) * 60_000  # minutes ago: neither late nor future


def _event(user: str, type_: str = "page_view") -> bytes:
    event = {"event_id": str(uuid.uuid4()), "type": type_, "user_id": user, "ts": NOW}
    return json.dumps(event).encode()


async def _produce_corrupt(worker: Worker, partition: int, users: list[str]) -> int:
    """One batch of page views of `users` on clickstream[partition] with its last byte flipped
    (inside the last record: the CRC no longer matches); the batch's base offset."""
    build = message_accumulator.BatchBuilder._build

    def corrupt(self: Any) -> Any:
        built = build(self)
        if not getattr(self, "corrupted", False):
            self._buffer = bytearray(built)
            self._buffer[-1] ^= 0xFF
            self.corrupted = True
        return self._buffer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(worker.broker_url))
    await producer.start()
    try:
        message_accumulator.BatchBuilder._build = corrupt
        batch = producer.create_batch()
        for user in users:
            batch.append(key=user.encode(), value=_event(user), timestamp=None)
        sent = await producer.send_batch(batch, "clickstream", partition=partition)
        return int((await sent).offset)
    finally:
        message_accumulator.BatchBuilder._build = build
        await producer.stop()


def test_a_corrupt_batch_is_dead_lettered_and_the_worker_goes_on(
    own_worker: Worker,  # noqa: F811
) -> None:
    worker = own_worker
    pid = worker.proc.pid
    tag = uuid.uuid4().hex[:6]
    lost = [f"lost-{tag}-{n}" for n in range(3)]
    base = asyncio.run(_produce_corrupt(worker, 0, lost))
    good = [f"good-{tag}-{n}" for n in range(8)]  # on every partition, clickstream[0] included
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap_servers(worker.broker_url), "partitioner": "murmur2_random"}
    )
    placed: list[int] = []
    for user in good:
        producer.produce(
            "clickstream",
            _event(user),
            key=user.encode(),
            on_delivery=lambda err, msg: placed.append(msg.partition()),
        )
    producer.produce("clickstream", _event(good[0], "search"), key=good[0].encode(), partition=0)
    assert producer.flush(30) == 0

    def folded() -> bool:
        if worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited:\n{worker.log.read_text()[-3000:]}")
        return all(profile_events(worker, u) for u in good) and "search" in (
            profile_events(worker, good[0]) or {}
        )

    wait_until(folded, timeout=60, what="the good events folded")
    assert all(profile_events(worker, u) is None for u in lost)
    letters = dead_letters(worker, {("clickstream", 0, base)}, timeout=60)
    assert ("clickstream", 0, base) in letters, letters
    assert letters.count(("clickstream", 0, base)) == 1, "dead-lettered more than once"
    assert metric(worker.base, "persona_events_dead_lettered_total") == 1
    assert worker.proc.poll() is None and worker.proc.pid == pid
