"""Input records compressed as shops' producers send them: librdkafka and the Java client set
`compression.type` to gzip, snappy, lz4 or zstd. A real broker and worker, librdkafka producing.

Without a library for snappy, lz4 and zstd (aiokafka decompresses them with cramjam), the first
lz4 batch stopped the worker's fetcher: the worker exited, and `persona run` restarted it onto
the same batch, forever, with lag growing."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from streams.admin import bootstrap_servers
from streams.broker import EmbeddedBroker
from tests.conftest import Worker, start_worker, wait_until
from tests.streams.test_hostile_records import profile_events

pytestmark = pytest.mark.integration
confluent_kafka = pytest.importorskip("confluent_kafka")

NOW = (int(time.time()) // 60 - 5) * 60_000  # minutes ago: neither late nor future
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]  # every codec Kafka defines
EVENTS = 40  # per codec, enough for batches of several records


@pytest.fixture(scope="module")
def codec_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("codecs")
    with EmbeddedBroker(log_file=tmp / "broker.log") as broker:
        worker = start_worker(broker.url, tmp / "w")
        try:
            yield worker
        finally:
            worker.stop()


def produce_compressed(worker: Worker, codec: str, users: list[str]) -> None:
    """EVENTS page views, spread over `users`, produced in batches compressed with `codec`."""
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap_servers(worker.broker_url),
            "compression.type": codec,
            "partitioner": "murmur2_random",
            "linger.ms": 50,  # several records a batch, as a busy shop's producer sends them
        }
    )
    errors: list[str] = []

    def report(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for n in range(EVENTS):
        user = users[n % len(users)]
        event = {"event_id": str(uuid.uuid4()), "type": "page_view", "user_id": user, "ts": NOW}
        producer.produce(
            "clickstream",
            json.dumps(event).encode(),
            key=user.encode(),
            on_delivery=report,
        )
    assert producer.flush(30) == 0 and not errors, errors


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_events_are_folded(codec_worker: Worker, codec: str) -> None:
    worker = codec_worker
    users = [f"{codec}-{n}-{uuid.uuid4().hex[:6]}" for n in range(4)]
    produce_compressed(worker, codec, users)
    per_user = EVENTS // len(users)

    def folded() -> bool:
        if worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited:\n{worker.log.read_text()[-3000:]}")
        return all(profile_events(worker, u) == {"page_view": per_user} for u in users)

    wait_until(folded, timeout=60, what=f"the {codec} events folded")
