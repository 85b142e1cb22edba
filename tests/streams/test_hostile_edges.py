"""Hostile records at the edges the flood of tests/streams/test_hostile_records.py does not reach:
records whose dead letter would not fit in a Kafka record, and keys that name the engine's own
rows. A real broker and worker (librdkafka as the hostile producer), as there."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.conftest import Worker, metric, wait_until
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
