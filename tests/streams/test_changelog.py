"""TableWriter (streams/changelog.py): the partition's RocksDB, the changelog records in order (one
producer batch per partition), the persisted offset once acknowledged, and a failed send stopping
the next write. One test runs against the real embedded broker and reads the changelog back; the
others use a recording producer whose acknowledgements the test releases (or fails)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rocksdict import Options, Rdict

from streams.admin import bootstrap_servers, ensure_topics
from streams.broker import EmbeddedBroker
from streams.changelog import TableWriter

TOPIC = "persona-profiles-changelog"


class _Batch:
    def __init__(self, limit: int) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.limit = limit

    def append(self, *, key: bytes, value: bytes | None, timestamp: Any) -> Any:
        if len(self.records) >= self.limit:
            return None  # full, as aiokafka's BatchBuilder answers
        self.records.append((key, value))
        return object()


class _Producer:
    """Records `send_batch` calls; the test acknowledges them (offsets per partition, in order)."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes | None]]]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self._next: dict[int, int] = {}

    def create_batch(self) -> _Batch:
        return _Batch(self.limit)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, list(batch.records)))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    def ack_all(self) -> None:
        for fut, (_, partition, records) in zip(self.futures, self.sent, strict=True):
            if not fut.done():
                base = self._next.get(partition, 0)
                self._next[partition] = base + len(records)
                fut.set_result(SimpleNamespace(offset=base))


class _Store:
    offset_key = b"__faust\x00offset__"

    def __init__(self, root: Path) -> None:
        # opened as Faust's rocksdict store opens its partitions (raw keys and values)
        self.dbs = {p: Rdict(str(root / f"p{p}"), options=Options(raw_mode=True)) for p in range(2)}
        self.persisted: list[tuple[int, int]] = []

    def _db_for_partition(self, partition: int) -> Rdict:
        return self.dbs[partition]

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted.append((tp.partition, offset))
        self.dbs[tp.partition].put(self.offset_key, str(offset).encode())


def _table(tmp_path: Path, producer: Any) -> tuple[Any, _Store]:
    store = _Store(tmp_path)
    table = SimpleNamespace(
        data=store,
        changelog_topic=SimpleNamespace(get_topic_name=lambda: TOPIC),
        app=SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer)),
    )
    return table, store


async def _settle() -> None:
    await asyncio.sleep(0)  # the acknowledgements' callbacks
    await asyncio.sleep(0)  # the one offset write they scheduled


def test_writes_go_to_the_partition_db_and_the_changelog_in_order(tmp_path: Path) -> None:
    producer = _Producer()
    table, store = _table(tmp_path, producer)
    writer = TableWriter(table)

    async def go() -> None:
        writer.write(1, [(b"u1", b"v1"), (b"u2", b"v2")])
        writer.write(0, [(b"u3", b"v3")])
        writer.write(1, [(b"u1", None)])  # erased: a tombstone
        assert producer.sent == []  # nothing leaves before ship()
        await writer.ship()
        producer.ack_all()
        await _settle()

    asyncio.run(go())
    assert store.dbs[1].get(b"u1") is None
    assert store.dbs[1].get(b"u2") == b"v2"
    assert store.dbs[0].get(b"u3") == b"v3"
    assert store.dbs[0].get(b"u1") is None
    assert producer.sent == [  # one batch per partition, records in the order written
        (TOPIC, 1, [(b"u1", b"v1"), (b"u2", b"v2"), (b"u1", None)]),
        (TOPIC, 0, [(b"u3", b"v3")]),
    ]
    # the highest acknowledged offset of each partition (a batch's last record)
    assert sorted(store.persisted) == [(0, 0), (1, 2)]


def test_a_full_batch_continues_in_the_next_in_order(tmp_path: Path) -> None:
    producer = _Producer(limit=2)
    table, store = _table(tmp_path, producer)
    writer = TableWriter(table)

    async def go() -> None:
        writer.write(0, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
        await writer.ship()
        producer.ack_all()
        await _settle()

    asyncio.run(go())
    assert producer.sent == [(TOPIC, 0, [(b"a", b"1"), (b"b", b"2")]), (TOPIC, 0, [(b"c", b"3")])]
    assert max(store.persisted) == (0, 2)


def test_no_offset_is_persisted_before_the_broker_acknowledges(tmp_path: Path) -> None:
    producer = _Producer()
    table, store = _table(tmp_path, producer)
    writer = TableWriter(table)

    async def go() -> None:
        writer.write(0, [(b"u", b"v")])
        await writer.ship()
        await asyncio.sleep(0.01)
        assert store.persisted == []
        producer.ack_all()
        await _settle()

    asyncio.run(go())
    assert store.persisted == [(0, 0)]


def test_a_failed_changelog_send_stops_the_next_write(tmp_path: Path) -> None:
    producer = _Producer()
    table, store = _table(tmp_path, producer)
    writer = TableWriter(table)

    async def go() -> None:
        writer.write(0, [(b"u", b"v1")])
        await writer.ship()
        producer.futures[0].set_exception(RuntimeError("broker gone"))
        await asyncio.sleep(0)
        writer.write(0, [(b"u", b"v2")])

    with pytest.raises(RuntimeError, match="broker gone"):
        asyncio.run(go())
    assert store.dbs[0].get(b"u") == b"v1"  # the second write did not happen


@pytest.mark.integration
def test_the_changelog_on_the_real_broker_holds_every_record_in_order(tmp_path: Path) -> None:
    """Through aiokafka's producer to the embedded broker, read back with a consumer."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:

        async def go() -> list[tuple[int, int, bytes, bytes | None]]:
            await ensure_topics(broker.url, 2, [TOPIC])
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker.url))
            await producer.start()
            table, store = _table(tmp_path, producer)
            writer = TableWriter(table)
            try:
                for n in range(3):  # three batches, two partitions
                    writer.write(0, [(b"a%d" % n, b"x%d" % n), (b"b%d" % n, None)])
                    writer.write(1, [(b"c%d" % n, b"y%d" % n)])
                    await writer.ship()
                await producer.flush()
                await _settle()
            finally:
                await producer.stop()
            highest: dict[int, int] = {}
            for partition, offset in store.persisted:
                highest[partition] = max(offset, highest.get(partition, -1))
            assert highest == {0: 5, 1: 2}  # each partition's last record, acknowledged
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap_servers(broker.url), auto_offset_reset="earliest"
            )
            await consumer.start()
            try:
                tps = [TopicPartition(TOPIC, p) for p in (0, 1)]
                consumer.assign(tps)
                got: list[tuple[int, int, bytes, bytes | None]] = []
                for _ in range(50):
                    batches = await consumer.getmany(timeout_ms=200)
                    for records in batches.values():
                        got += [(r.partition, r.offset, r.key, r.value) for r in records]
                    if len(got) >= 9:
                        break
                return sorted(got)
            finally:
                await consumer.stop()

        got = asyncio.run(go())
    assert got == [
        (0, 0, b"a0", b"x0"),
        (0, 1, b"b0", None),
        (0, 2, b"a1", b"x1"),
        (0, 3, b"b1", None),
        (0, 4, b"a2", b"x2"),
        (0, 5, b"b2", None),
        (1, 0, b"c0", b"y0"),
        (1, 1, b"c1", b"y1"),
        (1, 2, b"c2", b"y2"),
    ]
