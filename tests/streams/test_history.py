"""What a scheduled retraining run reads (streams/history.py), on a real embedded broker: the
newest events of each input partition up to a bound, without the events of a user erased by a
signed erase command after they were produced; an unsigned erase command erases nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from engine.events import INPUT_TOPICS, encode
from engine.signing import ClusterKey
from streams.admin import COMMANDS_TOPIC, ensure_topics
from streams.broker import EmbeddedBroker
from streams.history import read_history
from streams.signed import RecordSigner
from tests.conftest import CLUSTER_SECRET
from tests.models.synthetic import T0, view

pytestmark = pytest.mark.integration
KEY = ClusterKey(CLUSTER_SECRET)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of its own: erase commands on the session broker would reach its worker."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as own:
        yield own


async def send(
    producer: AIOKafkaProducer,
    topic: str,
    key: str,
    value: bytes,
    signed: bool,
    timestamp_ms: int | None = None,
) -> int:
    """Produce one record; its record time (ms)."""
    headers = RecordSigner(KEY, "test").headers(topic, key.encode(), value) if signed else None
    sent = await producer.send_and_wait(
        topic, value, key=key.encode(), headers=headers, timestamp_ms=timestamp_ms
    )
    return int(sent.timestamp)


async def test_history_bounds_each_partition_and_leaves_erased_users_out(
    broker: EmbeddedBroker,
) -> None:
    await ensure_topics(broker.url, 1, [*INPUT_TOPICS, COMMANDS_TOPIC])
    producer = AIOKafkaProducer(bootstrap_servers=broker.url.removeprefix("kafka://"))
    await producer.start()
    try:
        for user in ("gone", "kept", "stays"):
            for n in range(4):
                event = view(user, f"item-{n}", T0 + n)
                await send(producer, "clickstream", user, encode(event), signed=False)
        erased_at = 0
        for user, signed in (("gone", True), ("kept", False)):
            body = json.dumps({"command": "erase", "user_id": user}).encode()
            erased_at = max(erased_at, await send(producer, COMMANDS_TOPIC, user, body, signed))
        later = view("gone", "item-after", T0 + 99)  # produced after the erasure: a new history
        # a record time after the erasure's (both could fall in one millisecond on loopback, and
        # a record of the erasure's own millisecond is fenced, as in the fold)
        await send(producer, "clickstream", "gone", encode(later), False, erased_at + 1)
    finally:
        await producer.stop()

    events = await read_history(broker.url, KEY, partitions=1)
    by_user = sorted((e.user_id, e.item_id) for e in events)
    assert by_user == sorted(
        [("gone", "item-after")] + [(u, f"item-{n}") for u in ("kept", "stays") for n in range(4)]
    )
    # 3 input topics x 1 partition: at most 2 records each, the newest of the partition
    newest = await read_history(broker.url, KEY, partitions=1, max_events=6)
    assert [(e.user_id, e.item_id) for e in newest] == [("stays", "item-3"), ("gone", "item-after")]
