"""The catalog fold (streams/app.py `_catalog_fold`): catalog records applied in batches, written
with their changelog records outside Faust's producer buffer, so offset commits go on while a
large import is applied and a restarted worker does not apply it again; tombstones delete the
item wherever a partitioner put it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import confluent_kafka
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from engine.catalog import Product
from engine.settings import Settings
from engine.signing import ClusterKey
from persona.loading import import_catalog
from streams.admin import KEPT_HEADER, bootstrap_servers
from streams.app import PersonaStreams
from streams.broker import EmbeddedBroker
from streams.keys import FAUST_OFFSET_KEY
from tests.conftest import CLUSTER_SECRET, Worker, http, metric, start_worker, wait_until
from tests.streams.test_catalog_cache import record

UPDATES = "persona_catalog_updates_total"
UNVERIFIED = "persona_catalog_kept_unverified_total"
PARTITIONS = 4


def products(n: int, prefix: str = "cf") -> Iterator[Product]:
    for i in range(n):
        yield Product(
            f"{prefix}-{i}",
            f"Product {i}",
            f"https://shop.test/p/{i}",
            f"https://shop.test/i/{i}.jpg",
            float(1 + i % 90),
            "EUR",
            category=f"c{i % 40}",
            brand=f"b{i % 70}",
        )


async def _offsets(broker_url: str) -> tuple[int, int]:
    """(committed, end) offsets of the worker's group on the catalog topic, summed over its
    partitions (a partition without a commit counts 0)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(broker_url),
        group_id="persona",  # the worker's group; fetching its offsets does not join it
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = [TopicPartition("catalog", p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        committed = [await consumer.committed(tp) or 0 for tp in tps]
        return sum(committed), sum(ends.values())
    finally:
        await consumer.stop()


def offsets(broker_url: str) -> tuple[int, int]:
    return asyncio.run(_offsets(broker_url))


@pytest.mark.integration
def test_commits_go_on_during_a_large_import_and_a_restart_applies_none_of_it(
    tmp_path: Path,
) -> None:
    n = 60_000
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        assert asyncio.run(import_catalog(broker.url, PARTITIONS, products(n))) == n
        worker = start_worker(broker.url, tmp_path / "w")
        try:
            during = None  # committed records seen while the import was still being applied
            while (applied := metric(worker.base, UPDATES)) < n:
                committed, _ = offsets(broker.url)
                if committed and metric(worker.base, UPDATES) < n:
                    during = (committed, applied)
                    break
            # Through Faust's agent, no offset was committed before the whole import was applied
            # (each commit waited for a producer buffer the agent kept filling).
            assert during is not None, "no offset committed while the import was applied"
            wait_until(lambda: metric(worker.base, UPDATES) == n, timeout=120, what="the import")
        finally:
            worker.stop()
        committed, end = offsets(broker.url)
        assert committed >= end > 0  # (the embedded broker may report ends a little short)
        again = start_worker(broker.url, tmp_path / "w")
        try:
            wait_until(lambda: again.proc.poll() is None, timeout=5)
            asyncio.run(asyncio.sleep(3))  # time to fetch anything left to apply
            assert metric(again.base, UPDATES) == 0  # the restart applied nothing again
            # and it serves the stored catalog
            status, _, body = http("GET", again.base + "/v1/feeds/google.tsv")
            assert status == 200 and body.count(b"\ncf-") == n
        finally:
            again.stop()


def _product_json(item_id: str, title: str) -> bytes:
    return json.dumps(
        {
            "item_id": item_id,
            "title": title,
            "url": f"https://shop.test/p/{item_id}",
            "image_url": f"https://shop.test/i/{item_id}.jpg",
            "price": 5,
            "currency": "EUR",
        }
    ).encode()


@pytest.mark.integration
def test_a_tombstone_deletes_the_item_from_every_partition_and_a_batch_applies_in_order(
    worker: Worker,
) -> None:
    """Two producers with different partitioners put the same item in two partitions; a
    tombstone in a third deletes both (the feed lists neither). Records of one item within a
    batch apply in their order: put, delete, put again leaves the last put."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap_servers(worker.broker_url)})
    tag = uuid.uuid4().hex[:8]  # ids of this run: the session worker's catalog outlives a test

    def send(
        records: list[tuple[bytes, bytes | None, int]], shown: Callable[[bytes], bool]
    ) -> bytes:
        """The feed once it shows what `records` make (`shown`): the session worker's update
        count is no witness, as other tests' catalog records move it too."""
        for key, value, partition in records:
            producer.produce("catalog", value, key=key, partition=partition)
        assert producer.flush(30) == 0

        def showing() -> bytes:
            feed = _feed(worker)
            return feed if shown(feed) else b""

        found: bytes = wait_until(showing, timeout=60, what="the catalog records in the feed")
        return found

    twin, phoenix = f"cf-twin-{tag}".encode(), f"cf-phoenix-{tag}".encode()
    # (no order holds between partitions: the tombstone goes once both copies are stored)
    send([(twin, _product_json(twin.decode(), f"Twin one {tag}"), 0)],
         lambda feed: f"Twin one {tag}".encode() in feed)  # fmt: skip
    body = send([(twin, _product_json(twin.decode(), f"Twin two {tag}"), 1)],
                lambda feed: f"Twin two {tag}".encode() in feed)  # fmt: skip
    assert f"Twin one {tag}".encode() in body  # both copies listed
    body = send(
        [
            (twin, None, 2),
            (phoenix, _product_json(phoenix.decode(), f"Phoenix first {tag}"), 3),
            (phoenix, None, 3),
            (phoenix, _product_json(phoenix.decode(), f"Phoenix again {tag}"), 3),
        ],
        # the last record of each partition applied: the tombstone (2), the last put (3)
        lambda feed: twin not in feed and f"Phoenix again {tag}".encode() in feed,
    )
    assert f"Phoenix first {tag}".encode() not in body


# -- hostile rows in the table: in-process, Faust's real RocksDB store, no broker ----------------


CLUSTER = ClusterKey(CLUSTER_SECRET)


def _streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str | None = CLUSTER_SECRET
) -> PersonaStreams:
    """A worker's streams object whose catalog fold writes (its changelog sends and broadcasts
    are recorded instead of sent: no broker here)."""
    settings = Settings(data_dir=tmp_path, cluster_secret=secret)
    streams = PersonaStreams(settings, "kafka://127.0.0.1:9")
    monkeypatch.setattr(streams._catalog_batches, "current", lambda epoch: True)
    shipped: list[int] = []

    async def ship() -> None:
        shipped.append(1)

    async def broadcast(old: Product | None, new: Product) -> None:
        return None

    async def dead_letter(record: Any, reason: str) -> None:
        raise AssertionError(f"dead-lettered: {reason}")

    monkeypatch.setattr(streams._catalog_writer, "ship", ship)
    monkeypatch.setattr(streams.triggers, "broadcast_item_change", broadcast)
    monkeypatch.setattr(streams, "_dead_letter", dead_letter)
    return streams


def _catalog(key: bytes, value: bytes | None, partition: int = 0) -> Any:
    return SimpleNamespace(message=SimpleNamespace(key=key, value=value, partition=partition))


def test_a_product_replaces_an_unreadable_stored_row_and_the_feed_skips_such_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    streams = _streams(tmp_path, monkeypatch)
    lamp = next(products(1, "lamp"))
    # a changelog record of the catalog table that is not a product (any producer can write it)
    streams.catalog.apply_changelog_batch([record(b"lamp-0", b"\xc1 not a product", 0)])
    streams.catalog.apply_changelog_batch([record(b"vase", b"\xc1 nor this", 1, partition=1)])
    assert list(streams.products()) == []  # skipped, not a failed feed
    batch = [_catalog(b"lamp-0", json.dumps(lamp.to_dict()).encode())]
    assert asyncio.run(streams._apply_catalog(batch, 0))  # not dead-lettered for the old row
    assert streams.product("lamp-0") == lamp
    assert list(streams.products()) == [lamp]
    assert streams.stats.catalog_updates == 1


def test_a_tombstone_keyed_as_fausts_offset_row_leaves_the_row_and_is_dead_lettered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `catalog` tombstone whose key is Faust's own row in every table partition
    (`__faust\\x00offset__`, where table recovery resumes): it deleted that row from every
    partition holding it, and sent the deletion to the table's changelog."""
    streams = _streams(tmp_path, monkeypatch)
    letters: list[str] = []

    async def dead_letter(record: Any, reason: str) -> None:
        letters.append(reason)

    monkeypatch.setattr(streams, "_dead_letter", dead_letter)
    store: Any = streams.catalog.data
    changelog = streams.catalog.changelog_topic.get_topic_name()
    for partition in range(PARTITIONS):
        store.set_persisted_offset(TP(changelog, partition), 100 + partition)
    hostile = [FAUST_OFFSET_KEY, b"\xff\xfe", b"a\x00b", b"x" * 129]
    batch = [_catalog(key, None, partition) for partition, key in enumerate(hostile)]
    assert asyncio.run(streams._apply_catalog(batch, 0))
    persisted = [store.persisted_offset(TP(changelog, p)) for p in range(PARTITIONS)]
    assert persisted == [100, 101, 102, 103]
    assert len(letters) == len(hostile)
    assert all(reason.startswith("a catalog tombstone's key") for reason in letters), letters
    assert streams.stats.catalog_updates == 0


def test_a_kept_record_republished_at_adoption_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `catalog` record marked kept is a row of the table republished into a new embedded
    broker's topic for the topic's readers (streams/adopt.py): the fold writes nothing for it,
    announces nothing (not even a price drop it would seem to be) and counts no update. (Marked
    with the cluster key's mark of the record, as the adoption marks it.)"""
    streams = _streams(tmp_path, monkeypatch)
    announced: list[tuple[Product | None, Product]] = []

    async def broadcast(old: Product | None, new: Product) -> None:
        announced.append((old, new))

    monkeypatch.setattr(streams.triggers, "broadcast_item_change", broadcast)
    lamp = next(products(1, "lamp"))
    assert asyncio.run(streams._apply_catalog([_catalog(b"lamp-0", lamp.pack())], 0))
    generation = streams.catalog_generation
    announced.clear()  # (None, lamp): a new product, announced to nobody
    cheaper = replace(lamp, price=lamp.price / 2)
    kept = _catalog(b"lamp-0", cheaper.pack())
    kept.message.headers = [
        (KEPT_HEADER, CLUSTER.kept_mark("catalog", 0, b"lamp-0", cheaper.pack()))
    ]
    assert asyncio.run(streams._apply_catalog([kept], 0))
    assert streams.product("lamp-0") == lamp and list(streams.products()) == [lamp]
    assert streams.catalog_generation == generation and announced == []
    assert streams.stats.catalog_updates == 1 and streams.stats.kept_unverified == 0
    assert asyncio.run(streams._apply_catalog([_catalog(b"lamp-0", cheaper.pack())], 0))
    assert streams.product("lamp-0") == cheaper and announced == [(lamp, cheaper)]  # unmarked


def _forged_marks(key: bytes, value: bytes, partition: int) -> list[object]:
    """KEPT_HEADER values any producer could set on a real update of `key` to `value`: a plain
    flag, garbage, the true mark truncated or damaged, the mark of another partition, of the
    value before the update, or under another secret."""
    true = CLUSTER.kept_mark("catalog", partition, key, value)
    return [
        b"1",
        b"",
        b"v1;" + b"0" * 64,
        true[:-1],
        true[:20],
        true[:-1] + (b"0" if true[-1:] != b"0" else b"1"),
        CLUSTER.kept_mark("catalog", partition + 1, key, value),
        ClusterKey("f" * 40).kept_mark("catalog", partition, key, value),
    ]


def test_a_record_whose_kept_mark_does_not_verify_is_applied_counted_and_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Any producer can set KEPT_HEADER: on a real product update whose mark is not the cluster
    key's mark of the record it was passed over silently (neither applied nor dead-lettered).
    Now it is applied as an ordinary record (a price drop announced), counted, logged once."""
    streams = _streams(tmp_path, monkeypatch)
    announced: list[tuple[Product | None, Product]] = []

    async def broadcast(old: Product | None, new: Product) -> None:
        announced.append((old, new))

    monkeypatch.setattr(streams.triggers, "broadcast_item_change", broadcast)
    lamp = next(products(1, "lamp"))
    assert asyncio.run(streams._apply_catalog([_catalog(b"lamp-0", lamp.pack(), 1)], 0))
    stale = CLUSTER.kept_mark("catalog", 1, b"lamp-0", lamp.pack())  # the stored row's mark
    forged = len(_forged_marks(b"lamp-0", lamp.pack(), 1)) + 1
    before = lamp
    for n in range(forged):
        announced.clear()
        cheaper = replace(lamp, price=round(lamp.price / (n + 2), 2))
        mark = [*_forged_marks(b"lamp-0", cheaper.pack(), 1), stale][n]
        record = _catalog(b"lamp-0", cheaper.pack(), 1)
        record.message.headers = [("other", b"x"), (KEPT_HEADER, mark)]
        generation = streams.catalog_generation
        with caplog.at_level("WARNING", logger="persona.streams"):
            assert asyncio.run(streams._apply_catalog([record], 0))
        assert streams.product("lamp-0") == cheaper, mark
        assert list(streams.products()) == [cheaper]
        assert streams.catalog_generation == generation + 1
        assert announced == [(before, cheaper)], mark
        before = cheaper
    assert streams.stats.catalog_updates == 1 + forged
    assert streams.stats.kept_unverified == forged
    said = [r for r in caplog.records if KEPT_HEADER in r.getMessage()]
    assert len(said) == 1, said  # once, not once a record


def test_without_a_cluster_secret_no_record_is_passed_over_as_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    streams = _streams(tmp_path, monkeypatch, secret=None)
    lamp = next(products(1, "lamp"))
    record = _catalog(b"lamp-0", lamp.pack())
    record.message.headers = [
        (KEPT_HEADER, CLUSTER.kept_mark("catalog", 0, b"lamp-0", lamp.pack()))
    ]
    assert asyncio.run(streams._apply_catalog([record], 0))
    assert streams.product("lamp-0") == lamp and streams.stats.kept_unverified == 1


@pytest.mark.integration
def test_an_outside_producers_record_marked_kept_is_applied(worker: Worker) -> None:
    """A shop's producer (confluent-kafka) sets `persona-kept: 1` on a real price change, and a
    wrong and a truncated mark on two more: the worker applies all three (the new prices are in
    the feed) and counts them; none is passed over or dead-lettered."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap_servers(worker.broker_url)})
    item = f"cf-forged-kept-{uuid.uuid4().hex[:8]}"
    lamp = Product(item, "Forged lamp", f"https://shop.test/p/{item}",
                   f"https://shop.test/i/{item}.jpg", 40.0, "EUR")  # fmt: skip
    updates, unverified = metric(worker.base, UPDATES), metric(worker.base, UNVERIFIED)
    producer.produce("catalog", lamp.pack(), key=item.encode(), partition=2)
    assert producer.flush(30) == 0
    wait_until(lambda: metric(worker.base, UPDATES) >= updates + 1, what="the product")
    true = CLUSTER.kept_mark("catalog", 2, item.encode(), replace(lamp, price=31.0).pack())
    marks = [b"1", b"v1;" + b"ab" * 32, true[:-2]]
    for price, mark in zip((33.0, 32.0, 31.0), marks, strict=True):
        value = replace(lamp, price=price).pack()
        producer.produce("catalog", value, key=item.encode(), partition=2,
                         headers=[(KEPT_HEADER, mark)])  # fmt: skip
        assert producer.flush(30) == 0
        shown = f"\t{price:.2f} EUR".encode()
        wait_until(lambda shown=shown: shown in _feed_line(worker, item), what=f"{shown!r}")
    # counted: no other test's record on the session broker carries a kept mark, so the
    # unverified count is this test's alone; the update count is not (other tests' catalog
    # records move it), so it is bounded from below only
    assert metric(worker.base, UNVERIFIED) == unverified + len(marks)
    assert metric(worker.base, UPDATES) >= updates + 1 + len(marks)


def _feed(worker: Worker) -> bytes:
    status, _, body = http("GET", worker.base + "/v1/feeds/google.tsv")
    assert status == 200
    return body


def _feed_line(worker: Worker, item: str) -> bytes:
    body = _feed(worker)
    return next((row for row in body.split(b"\n") if row.startswith(item.encode())), b"")
