"""Hostile records at the edges the flood of tests/streams/test_hostile_records.py does not reach:
records whose dead letter would not fit in a Kafka record, and keys that name the engine's own
rows. A real broker and worker (librdkafka as the hostile producer), as there."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from engine.signing import ClusterKey
from streams.admin import COMMANDS_TOPIC, bootstrap_servers
from tests.conftest import CLUSTER_SECRET, Worker, http, metric, wait_until
from tests.streams.test_hostile_records import (
    dead_letters,
    ev,
    own_worker,  # noqa: F401 (a fixture)
    produce,
    profile_events,
)

pytestmark = pytest.mark.integration
confluent_kafka = pytest.importorskip("confluent_kafka")

NOW = (int(time.time()) // 60 - 5) * 60_000  # minutes ago: neither late nor future


def test_a_record_whose_dead_letter_outgrows_a_kafka_record_is_dead_lettered(
    own_worker: Worker,  # noqa: F811
) -> None:
    """A record of ~350 KB whose dead letter, wrapped as JSON, is over Kafka's 1 MB: its value is
    150,000 control characters (valid UTF-8, six bytes each as a JSON escape, so the wrapped
    value stays under the 900 KiB that switches to the original bytes) and its key 200 KB. The
    producer refused the wrapped letter (MessageSizeTooLargeError) and the worker stopped; it
    would stop again on the same record at every restart."""
    worker = own_worker
    pid = worker.proc.pid
    user = f"edge-{uuid.uuid4().hex[:8]}"
    poison = [
        ("clickstream", b"\x01" * 150_000, b"k" * 200_000),  # neither JSON nor msgpack
        ("catalog", b"\x01" * 150_000, b"k" * 200_000),  # nor a product
    ]
    hostile = produce(worker, iter(poison))
    good = [("clickstream", ev(user, "page_view", NOW), user.encode())]
    produce(worker, iter(good))
    wait_until(
        lambda: worker.proc.poll() is not None or profile_events(worker, user) == {"page_view": 1},
        timeout=60,
        what="the good event folded",
    )
    assert worker.proc.poll() is None, worker.log.read_text()[-4000:]
    letters = dead_letters(worker, set(hostile.offsets), timeout=60)
    assert set(hostile.offsets) <= set(letters)
    assert metric(worker.base, "persona_events_dead_lettered_total") == len(poison)
    assert worker.proc.pid == pid and "processing failed" not in worker.log.read_text()


def test_a_replayed_signed_erase_command_does_not_erase_the_users_later_history(
    own_worker: Worker,  # noqa: F811
) -> None:
    """A producer that can read the commands topic copies a user's signed erase record (key,
    value, headers) and produces it again once the user has come back: the signature verified
    (it covers key, value, signer and signing time, and the record is the same), so the replay
    erased the user's new history too, and fenced their events produced before it. Any erasure
    ever made could be replayed, at any time."""
    worker = own_worker
    user = f"back-{uuid.uuid4().hex[:8]}"
    key = user.encode()
    produce(worker, iter([("clickstream", ev(user, "page_view", NOW), key)]))
    wait_until(lambda: profile_events(worker, user) == {"page_view": 1}, what="first history")
    erase = json.dumps({"command": "erase", "user_id": user}).encode()
    headers = ClusterKey(CLUSTER_SECRET).sign_record(
        COMMANDS_TOPIC, key, erase, "test", int(time.time() * 1000)
    )
    erased = metric(worker.base, "persona_users_erased_total")
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap_servers(worker.broker_url),
            "partitioner": "murmur2_random",  # on the user's partition, as Persona sends it
        }
    )
    producer.produce(COMMANDS_TOPIC, erase, key=key, headers=headers)
    assert producer.flush(30) == 0
    wait_until(lambda: profile_events(worker, user) is None, what="the erasure")
    time.sleep(0.05)  # the new history is produced after the erasure
    produce(worker, iter([("clickstream", ev(user, "page_view", NOW + 1000), key)]))
    wait_until(lambda: profile_events(worker, user) == {"page_view": 1}, what="the user back")
    replay: list[tuple[str, int, int]] = []

    def delivered(err: object, msg: Any) -> None:
        replay.append((msg.topic(), msg.partition(), msg.offset()))

    producer.produce(COMMANDS_TOPIC, erase, key=key, headers=headers, on_delivery=delivered)
    assert producer.flush(30) == 0
    produce(worker, iter([("clickstream", ev(user, "product_view", NOW + 2000, "i1"), key)]))
    events = wait_until(
        lambda: (found := profile_events(worker, user)) and "product_view" in found and found,
        what="the marker event folded",
    )
    assert events == {"page_view": 1, "product_view": 1}, "the replay erased the new history"
    letters = dead_letters(worker, set(replay), timeout=60)
    assert set(replay) <= set(letters), "the replayed erase was not dead-lettered"
    assert metric(worker.base, "persona_users_erased_total") == erased + 1


def _commands(worker: Worker, key: bytes) -> list[Any]:
    """The records of the commands topic keyed `key`, read to the topic's end."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap_servers(worker.broker_url),
            "group.id": f"copy-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe([COMMANDS_TOPIC])
    found, ends, deadline = [], 0, time.monotonic() + 30
    try:
        while ends < 4 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                ends += msg.error().code() == confluent_kafka.KafkaError._PARTITION_EOF
            elif msg.key() == key:
                found.append(msg)
    finally:
        consumer.close()
    return found


def test_a_replayed_signed_merge_does_not_bring_back_an_erased_users_history(
    own_worker: Worker,  # noqa: F811
) -> None:
    """An anonymous id's history merged into a user (identify); the user erased (their profile,
    the ids merged into them). A copy of the signed `merge` command, produced again, carries the
    anonymous profile as it was merged: the user had no `m:` row any more to tell it was merged
    before, and the erased history came back as the user's profile."""
    worker = own_worker
    anon, user = f"anon-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:8]}"
    post = [
        ("clickstream", ev(anon, "product_view", NOW, "i1"), anon.encode()),
        ("clickstream", ev(anon, "product_view", NOW + 1, "i2"), anon.encode()),
    ]
    produce(worker, iter(post))
    wait_until(lambda: profile_events(worker, anon) == {"product_view": 2}, what="anon history")
    identify = json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": "identify",
            "user_id": user,
            "ts": NOW + 2,
            "props": {"previous_id": anon},
        }
    ).encode()
    produce(worker, iter([("clickstream", identify, user.encode())]))
    wait_until(
        lambda: (profile_events(worker, user) or {}).get("product_view") == 2, what="the merge"
    )
    merges = [m for m in _commands(worker, user.encode()) if b'"merge"' in m.value()]
    assert merges, "no merge command found"
    status, _, _ = http("DELETE", f"{worker.base}/v1/users/{user}")
    assert status == 200
    wait_until(lambda: profile_events(worker, user) is None, what="the erasure")
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap_servers(worker.broker_url), "partitioner": "murmur2_random"}
    )
    replay: list[tuple[str, int, int]] = []
    for merge in merges:
        producer.produce(
            COMMANDS_TOPIC,
            merge.value(),
            key=merge.key(),
            headers=merge.headers(),
            on_delivery=lambda err, msg: replay.append(
                (msg.topic(), msg.partition(), msg.offset())
            ),
        )
    assert producer.flush(30) == 0
    letters = dead_letters(worker, set(replay), timeout=60)
    assert profile_events(worker, user) is None, "the replay brought the erased history back"
    assert set(replay) <= set(letters), "the replayed merge was not dead-lettered"
