"""A worker's kept tables adopted by a new, empty embedded broker (streams/adopt.py): the rows
stay, nothing is recovered twice, and new events fold on top from the new topics' first offset."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import Options, Rdict

from engine.catalog import Product
from engine.placement import partition as default_partition
from engine.signing import ClusterKey
from streams.admin import KEPT_HEADER, bootstrap_servers
from streams.adopt import forget_broker, partition_dbs, republish_catalog
from streams.broker import EmbeddedBroker
from streams.keys import FAUST_OFFSET_KEY
from streams.positions import is_position_key
from streams.readers import table_dir
from tests.conftest import CLUSTER_SECRET, start_worker, wait_until
from tests.streams.carts import CartStream

pytestmark = pytest.mark.integration

STREAM = CartStream("adopt", tuple(f"a{i}" for i in range(10)), items=3)


def _bookkeeping(data_dir: Path) -> int:
    """Faust offsets and input positions left in the worker's partitions."""
    count = 0
    for path in partition_dbs(data_dir):
        db = Rdict(str(path), Options(raw_mode=True))
        count += sum(1 for k, _ in db.items() if k == FAUST_OFFSET_KEY or is_position_key(k))
        db.close()
    return count


def test_a_new_broker_adopts_the_kept_tables(tmp_path: Path) -> None:
    data = tmp_path / "w"
    with EmbeddedBroker(log_file=tmp_path / "first.log") as broker:
        worker = start_worker(broker.url, data)
        try:
            STREAM.send(broker.url, 0, 200)
            wait_until(lambda: STREAM.carts(worker) == STREAM.expected(200), timeout=90)
        finally:
            worker.stop()
    names = {p.name.rsplit("-", 1)[0] for p in partition_dbs(data)}
    assert {"profiles", "clock", "catalog", "popularity"} <= names
    assert _bookkeeping(data) > 0  # offsets and positions of the first broker

    adopted = forget_broker(data)
    assert adopted.partitions == len(partition_dbs(data)) and adopted.removed > 0
    assert _bookkeeping(data) == 0

    with EmbeddedBroker(log_file=tmp_path / "second.log") as broker:
        worker = start_worker(broker.url, data)
        try:
            assert STREAM.carts(worker) == STREAM.expected(200)  # kept, not recovered away
            STREAM.send(broker.url, 200, 120)  # the new topics start at offset 0
            wait_until(lambda: STREAM.carts(worker) == STREAM.expected(320), timeout=90)
        finally:
            worker.stop()


def _topic(broker: str) -> list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]]:
    """(partition, key, value, headers) of every `catalog` record."""

    async def read() -> list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(broker), group_id=None)
        await consumer.start()
        try:
            parts = [TopicPartition("catalog", p) for p in range(2)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends, found = await consumer.end_offsets(parts), []
            while any([await consumer.position(tp) < ends[tp] for tp in parts]):
                for records in (await consumer.getmany(*parts, timeout_ms=1000)).values():
                    found += [(r.partition, r.key, r.value, list(r.headers)) for r in records]
            return sorted(found)
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_the_kept_catalog_is_republished_into_the_new_brokers_topic(tmp_path: Path) -> None:
    """Every product of the catalog table goes into `catalog` in its table partition (a
    partition past today's count: where producers would put it), marked kept with the cluster
    key's mark of the record (only Persona can make it); bookkeeping rows and rows the fold
    would not store as they are stay out."""
    lamp, vase, cup, mug = (
        Product(
            i, i.title(), f"https://s.example.com/{i}", f"https://s.example.com/{i}.jpg", 2.5, "EUR"
        )
        for i in ("lamp", "vase", "cup", "mug")
    )
    rows = {
        0: [(b"lamp", lamp.pack()), (FAUST_OFFSET_KEY, b"17"), (b"junk", b"\xc1 not a product")],
        1: [(b"vase", vase.pack()), (b"elsewhere", cup.pack())],  # not under its own id
        5: [(b"mug", mug.pack())],  # a partition an earlier PERSONA_PARTITIONS=6 made
    }
    root = table_dir(tmp_path)
    root.mkdir(parents=True)
    for number, items in rows.items():
        db = Rdict(str(root / f"catalog-{number}.db"), Options(raw_mode=True))
        for key, value in items:
            db[key] = value
        db.close()
    cluster = ClusterKey(CLUSTER_SECRET)

    def kept(partition: int, key: bytes, value: bytes) -> tuple[int, bytes, bytes, object]:
        return (
            partition,
            key,
            value,
            [(KEPT_HEADER, cluster.kept_mark("catalog", partition, key, value))],
        )

    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        assert asyncio.run(republish_catalog(broker.url, tmp_path, 2, cluster)) == 3
        found = _topic(broker.url)
        assert found == sorted([
            kept(0, b"lamp", lamp.pack()),
            kept(1, b"vase", vase.pack()),
            kept(default_partition(b"mug", 2), b"mug", mug.pack()),
        ])  # fmt: skip
    for partition, key, value, headers in found:  # what the worker's fold verifies
        assert cluster.is_kept("catalog", partition, key, value, dict(headers)[KEPT_HEADER])
    none = tmp_path / "none"
    assert asyncio.run(republish_catalog("kafka://127.0.0.1:9", none, 2, cluster)) == 0
