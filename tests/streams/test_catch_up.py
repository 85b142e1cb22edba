"""Bounded catch-up (issue 21 item 2): a worker far behind its input reads and folds the backlog
`PERSONA_CATCH_UP_CHUNK` records at a time, keeps answering HTTP meanwhile, and says how far
behind it is (`persona_worker_lag_records`, /readyz) until it has caught up."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.admin import bootstrap_servers, ensure_topics
from streams.broker import EmbeddedBroker, free_port
from streams.positions import GapError, GapReader
from tests.conftest import http, metric, start_worker, wait_until
from tests.streams.carts import CartStream
from tests.streams.test_positions import commit_to_end

pytestmark = pytest.mark.integration

TOPIC = "catch-up-reads"
PER_PARTITION = 1_200


def _produce(broker_url: str, topic: str = TOPIC) -> None:
    async def go() -> None:
        await ensure_topics(broker_url, 3, (topic,))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker_url))
        await producer.start()
        try:
            for n in range(PER_PARTITION):
                for p in range(3):
                    await producer.send(topic, b"%d" % n, key=b"k", partition=p)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def test_a_limited_gap_read_never_returns_more_than_its_limit(broker: EmbeddedBroker) -> None:
    _produce(broker.url)

    async def go() -> list[dict[int, list[int]]]:
        reader, reads = GapReader(broker.url), []
        starts = dict.fromkeys(range(3), 0)
        try:
            while len(reads) < 20:
                found = await reader.read({(TOPIC, p): (s, None) for p, s in starts.items()}, 1000)
                got = {p: [e.message.offset for e in found[(TOPIC, p)]] for p in starts}
                if not any(got.values()):
                    break
                reads.append(got)
                starts = {p: (got[p][-1] + 1 if got[p] else s) for p, s in starts.items()}
            whole = await reader.read({(TOPIC, 0): (0, PER_PARTITION)}, 100)
            assert len(whole[(TOPIC, 0)]) == PER_PARTITION  # a bounded range is read whole
        finally:
            await reader.stop()
        return reads

    reads = asyncio.run(go())
    assert all(sum(len(v) for v in got.values()) <= 1000 for got in reads)
    assert len(reads) >= 4  # 3,600 records in reads of at most 1,000
    for p in range(3):  # each read goes on where the last one stopped: every record, once
        assert [o for got in reads for o in got[p]] == list(range(PER_PARTITION))


def test_a_gap_reader_between_reads_fetches_nothing(broker: EmbeddedBroker) -> None:
    """A read leaves no partition assigned: aiokafka's fetcher otherwise goes on fetching the
    last read's partitions (every 20 ms at their end) on the worker's loop until the next read."""
    topic = TOPIC + "-idle"
    _produce(broker.url, topic)

    async def go() -> tuple[set[object], set[object], int]:
        reader = GapReader(broker.url)
        try:
            found = await reader.read({(topic, 0): (0, 10), (topic, 1): (5, None)}, 100)
            assert reader._consumer is not None
            after = set(reader._consumer.assignment())
            with pytest.raises(GapError, match="could not read"):
                short = GapReader(broker.url, timeout=0.5)
                short._consumer = reader._consumer  # the same consumer, a range past the end
                await short.read({(topic, 2): (0, 10**9)})
            after_error = set(reader._consumer.assignment())
            again = await reader.read({(topic, 0): (10, 20)})  # a read after them still works
            return after, after_error, len(found[(topic, 0)]) + len(again[(topic, 0)])
        finally:
            await reader.stop()

    after, after_error, read = asyncio.run(go())
    assert after == set() and after_error == set()
    assert read == 20


def test_a_worker_behind_catches_up_in_chunks_and_keeps_answering(tmp_path: Path) -> None:
    stream = CartStream("catch", tuple(f"c{i}" for i in range(64)), items=3)
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        env = {"PERSONA_CATCH_UP_CHUNK": "1000"}
        first = start_worker(broker.url, tmp_path / "w", env)
        try:
            stream.send(broker.url, 0, 200)
            wait_until(lambda: stream.carts(first) == stream.expected(200), 120, what="200 events")
            wait_until(lambda: metric(first.base, "persona_worker_lag_records") == 0, 60)
        finally:
            first.stop()
        backlog = 12_000
        stream.send(broker.url, 200, backlog)  # produced while no worker runs ...
        commit_to_end(broker.url, "cart")  # ... and skipped by the group's offsets
        logged = (tmp_path / "w" / "worker.log").stat().st_size  # the first worker's lines
        worker = start_worker(broker.url, tmp_path / "w", env)
        answers: list[int] = []
        behind: list[float] = []
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                answers.append(http("GET", worker.base + "/healthz", key=None, timeout=5)[0])
                behind.append(metric(worker.base, "persona_worker_lag_records"))
                done.wait(0.2)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            total = 200 + backlog
            wait_until(lambda: stream.carts(worker) == stream.expected(total), 300, 1.0)
            wait_until(lambda: metric(worker.base, "persona_worker_lag_records") == 0, 60)
            status, _, body = http("GET", worker.base + "/readyz", key=None)
            assert status == 200 and b"catching up" not in body
            assert metric(worker.base, "persona_events_gap_read_total") == backlog
        finally:
            done.set()
            poller.join()
            worker.stop()
    assert answers and set(answers) == {200}  # /healthz answered all through the catch-up
    assert max(behind) > 0  # the metric said it was behind (and 0 once caught up: above)
    lines = worker.log.read_bytes()[logged:].decode(errors="replace")
    chunks = [int(n) for n in re.findall(r"(\d+) records were not delivered", lines)]
    assert sum(chunks) == backlog and max(chunks) <= 1000 and len(chunks) >= backlog // 1000


class Polls:
    """/healthz, /readyz and persona_worker_lag_records of a worker, polled from its first
    answer on (before it, nothing listens: connection refused)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.health: list[int] = []  # every /healthz status after the first answer (0: none in 5 s)
        self.ready: list[str] = []  # /readyz details of 200 answers
        self.behind: list[float] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self.done.is_set():
            status = http("GET", self.base + "/healthz", key=None, timeout=5)[0]
            if status or self.health:
                self.health.append(status)
                ready, _, body = http("GET", self.base + "/readyz", key=None, timeout=5)
                if ready == 200:
                    self.ready.append(json.loads(body)["detail"])
                self.behind.append(metric(self.base, "persona_worker_lag_records"))
            self.done.wait(0.2)

    def __enter__(self) -> Polls:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def test_a_restarted_worker_folds_its_backlog_and_answers_every_health_poll(
    tmp_path: Path,
) -> None:
    """`make bench-scale`'s catch-up: the worker stopped, a backlog produced, the worker started
    again on its data dir; Faust delivers the backlog from the committed offsets. From its first
    answer on, /healthz answers every poll within 5 s (generous: a batch folded in one stretch
    held the event loop 1.5-2 s on a loaded machine, streams.delivery.Turns), and /readyz and
    persona_worker_lag_records say how far behind it is until they fall to 0."""
    stream = CartStream("restart", tuple(f"r{i}" for i in range(400)), items=5)
    backlog = 40_000
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        first = start_worker(broker.url, tmp_path / "w")
        try:
            stream.send(broker.url, 0, 400)
            wait_until(lambda: metric(first.base, "persona_events_processed_total") == 400, 120)
        finally:
            first.stop()
        stream.send(broker.url, 400, backlog)  # produced while no worker runs
        port = free_port()
        with Polls(f"http://127.0.0.1:{port}") as polls:
            worker = start_worker(broker.url, tmp_path / "w", port=port)
            try:
                processed = functools.partial(metric, worker.base, "persona_events_processed_total")
                wait_until(lambda: processed() == backlog, 600, 1.0, what="the backlog folded")
                wait_until(lambda: polls.behind and polls.behind[-1] == 0, 60, what="lag 0")
                wait_until(lambda: polls.ready and polls.ready[-1] == "ok", 60, what="/readyz ok")
                assert stream.carts(worker) == stream.expected(400 + backlog)
            finally:
                polls.done.set()
                worker.stop()
    assert polls.health and set(polls.health) == {200}  # every poll answered, none took 5 s
    assert max(polls.behind) > 0 and polls.behind[-1] == 0
    said = (m for b in polls.ready for m in re.findall(r"catching up: ([\d,]+) input", b))
    caught = [int(m.replace(",", "")) for m in said]  # written with separators: 12,345
    assert caught and max(caught) > 0  # ready while behind, and saying so
