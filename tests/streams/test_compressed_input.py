"""Input records compressed as shops' producers send them: librdkafka and the Java client set
`compression.type` to gzip, snappy, lz4 or zstd. A real broker and worker, librdkafka producing.

Without a library for snappy, lz4 and zstd (aiokafka decompresses them with cramjam), the first
lz4 batch stopped the worker's fetcher: the worker exited, and `persona run` restarted it onto
the same batch, forever, with lag growing."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.admin import bootstrap_servers
from tests.conftest import Worker, wait_until, worker_of_its_own
from tests.streams.test_hostile_records import profile_events

pytestmark = pytest.mark.integration
confluent_kafka = pytest.importorskip("confluent_kafka")

NOW = (int(time.time()) // 60 - 5) * 60_000  # minutes ago: neither late nor future
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]  # every codec Kafka defines
EVENTS = 40  # per codec, enough for batches of several records


@pytest.fixture(scope="module")
def codec_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with worker_of_its_own(tmp_path_factory.mktemp("codecs")) as worker:
        yield worker


def produce_compressed(worker: Worker, codec: str, users: list[str]) -> set[int]:
    """EVENTS page views, spread over `users`, produced in batches compressed with `codec`; the
    partitions they went to."""
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap_servers(worker.broker_url),
            "compression.type": codec,
            "partitioner": "murmur2_random",
            "linger.ms": 50,  # several records a batch, as a busy shop's producer sends them
        }
    )
    errors: list[str] = []
    partitions: set[int] = set()

    def report(err: object, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            partitions.add(msg.partition())

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
    return partitions


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


def test_a_codec_the_worker_cannot_decompress_is_named_with_its_partition(tmp_path: Path) -> None:
    """Were a codec's library missing (here cramjam is hidden from the worker), the worker stops
    on the batch it cannot read: it must say which codec and which topic-partition, and what
    to do. aiokafka's error names only the codec, in a traceback of Faust's fetcher, and
    `persona run` restarts the worker onto the same batch."""
    hidden = tmp_path / "hide" / "cramjam"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    path = os.pathsep.join(filter(None, [str(hidden.parent), os.environ.get("PYTHONPATH")]))
    with worker_of_its_own(tmp_path, {"PYTHONPATH": path}) as worker:
        user = f"lz4-{uuid.uuid4().hex[:6]}"
        [partition] = produce_compressed(worker, "lz4", [user])
        wait_until(lambda: worker.proc.poll() is not None, timeout=60, what="the worker stop")
    log = worker.log.read_text()
    said = f"cannot read clickstream[{partition}]: its records are compressed with lz4"
    assert said in log, log[-3000:]
    assert "cramjam" in log[log.index(said) :].splitlines()[0]
