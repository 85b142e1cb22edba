"""Adopting a new, empty embedded broker with the tables kept in the data dir (issue 16).

The embedded broker keeps its topics in memory: after a start (or a broker death) its changelog
and input topics are empty, while the worker's RocksDB partitions under `<data dir>/faust` still
hold every folded row. Those rows are the truth on one machine. Two kinds of bookkeeping rows in
them describe the old broker and would mislead the worker on the new one:

- Faust's persisted changelog offset (`streams.keys.FAUST_OFFSET_KEY`), where table recovery
  resumes: above the new, empty changelog's end it fails the recovery's consistency check.
  Without it Faust starts recovery at the changelog's earliest offset; an empty changelog has
  nothing to read, so recovery ends at once and the local rows stay as they are
  (faust/tables/recovery.py `_add`, `_build_offsets`, `need_recovery`).
- Persona's input positions (`streams.positions.position_key`): the fold skips records below
  them as already folded, so old positions would skip the new topics' first records. Without
  a position the fold takes a partition's records from offset 0.

`forget_broker` removes both from every table partition (profiles, clock, catalog, popularity),
in one RocksDB write batch per partition database, while no worker runs.

The model registry lives in the compacted `models` topic; the worker keeps a copy of its records
(`streams.registry_copy`), and `republish` writes them, headers (signatures) included, into the
new broker's `models` topic before the worker starts, which folds them as it would have folded
the old topic.

The catalog's products are in the catalog table; the `catalog` topic is read too, by a full sync
(persona/catalog_sync.py `missing_products`: what the feed leaves out is marked out of stock).
On the new broker's empty topic it found nothing to mark, so `republish_catalog` writes every
product of the table into the topic, each in the partition whose table database holds it, marked
with `KEPT_HEADER`: the worker's catalog fold passes those over (the table holds them already:
writing them again would cost a write, a changelog record and a content index update per
product for nothing). Measured with benchmarks/adopt_catalog.py. The mark is the cluster key's
HMAC of the record's topic, partition, key and value (engine/signing.py `kept_mark`): any
producer can set the header, and the fold applies a record whose mark does not verify.

`adopt` does all three. Only `persona run` calls it, and only for an embedded broker it
has just started: on Kafka the changelogs and the topic are the truth and nothing here runs.
`start_fresh` is `persona run --fresh`: the kept state is removed on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from rocksdict import Rdict, WriteBatch

from engine.catalog import InvalidProduct, catalog_record
from engine.placement import partition as default_partition
from engine.signing import ClusterKey
from streams.admin import ALL_INPUTS, KEPT_HEADER, ensure_topics
from streams.kafka_security import Broker, as_config
from streams.keys import FAUST_OFFSET_KEY
from streams.positions import BOOKKEEPING_PREFIX, is_bookkeeping, is_position_key
from streams.readers import table_dir
from streams.registry import MODELS_TOPIC, _producer, ensure_registry_topics
from streams.registry_copy import REGISTRY_COPY_DIR, Entry, RegistryCopy

log = logging.getLogger("persona.adopt")
REPUBLISH_TRIES = 5
CATALOG_TABLE = "catalog"
PENDING_SENDS = 5000  # catalog records sent before their acknowledgements are awaited
MODEL_CACHE_DIR = "models"  # <data dir>/models: the worker's artifact cache
DEMO_MARK = "demo-loaded"  # written once `persona run --demo` has loaded the demo data
DEMO_PROGRESS = "demo-progress.json"  # demo events folded so far (persona/demo_load.py)


def partition_dbs(data_dir: Path) -> list[Path]:
    """Every table partition database (`<table>-<partition>.db`) of the worker."""
    root = table_dir(data_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("*.db") if p.is_dir())


def _open(path: Path) -> Rdict:
    """Open a partition the way Faust's rocksdict store does (raw keys and values, its options;
    the write buffer size Persona sets does not change what is stored)."""
    from faust.stores.rocksdb import RocksDBOptions

    return cast(Rdict, RocksDBOptions().open(path))


def _stale_keys(db: Rdict) -> list[bytes]:
    """The rows that describe the old broker: Faust's offset and the input positions (every
    bookkeeping row sorts under BOOKKEEPING_PREFIX, so only that range is read)."""
    stale = []
    for raw in db.keys(from_key=BOOKKEEPING_PREFIX):
        key = cast(bytes, raw)
        if not key.startswith(BOOKKEEPING_PREFIX):
            break
        if key == FAUST_OFFSET_KEY or is_position_key(key):
            stale.append(key)
    return stale


def forget_partition(path: Path) -> int:
    """Remove the old broker's rows from one partition database; returns how many."""
    db = _open(path)
    try:
        stale = _stale_keys(db)
        if stale:
            batch = WriteBatch(raw_mode=True)
            for key in stale:
                batch.delete(key)
            db.write(batch)
        return len(stale)
    finally:
        db.close()


@dataclass(frozen=True)
class Adopted:
    partitions: int  # partition databases kept
    removed: int  # bookkeeping rows removed
    registry: int = 0  # registry records republished
    catalog: int = 0  # catalog products republished

    def describe(self) -> str:
        if not (self.partitions or self.registry or self.catalog):
            return "no state kept in the data dir: starting empty"
        return (
            f"kept state: {self.partitions} table partition(s); {self.catalog} catalog "
            f"product(s) and {self.registry} model registry record(s) republished into the new "
            "embedded broker"
        )


def forget_broker(data_dir: Path) -> Adopted:
    """Make the kept tables ready for a new, empty broker (see the module doc). No worker may
    run on the data dir meanwhile."""
    paths = partition_dbs(data_dir)
    return Adopted(len(paths), sum(forget_partition(p) for p in paths))


async def republish(broker: Broker, entries: list[Entry], tries: int = REPUBLISH_TRIES) -> int:
    """Write the kept registry records, with their headers, into the `models` topic (nothing to
    write: the broker is not asked). A broker just started may refuse the first requests: a
    failed attempt is tried again (records written twice are the same facts; compaction and the
    fold keep one)."""
    if not entries:
        return 0
    return await _retrying("the model registry", lambda: _send_entries(broker, entries), tries)


async def _retrying(what: str, send: Callable[[], Awaitable[int]], tries: int) -> int:
    for attempt in range(1, tries + 1):
        try:
            return await send()
        except (KafkaError, OSError) as exc:
            if attempt == tries:
                raise
            log.warning("republishing %s failed (%s); trying again", what, exc)
            await asyncio.sleep(1.0)
    return 0


async def _send_entries(broker: Broker, entries: list[Entry]) -> int:
    await ensure_registry_topics(broker)
    producer = _producer(broker)
    await producer.start()
    try:
        for e in entries:
            value, key = e.value, e.key.encode("utf-8")
            await producer.send_and_wait(MODELS_TOPIC, value, key=key, headers=e.headers)
    finally:
        await producer.stop()
    return len(entries)


def catalog_dbs(data_dir: Path) -> list[tuple[int, Path]]:
    """(partition number, database) of every partition of the worker's catalog table."""
    found = []
    for path in partition_dbs(data_dir):
        table, _, number = path.stem.rpartition("-")
        if table == CATALOG_TABLE and number.isdigit():
            found.append((int(number), path))
    return found


def kept_products(db: Rdict) -> Iterator[tuple[bytes, bytes]]:
    """(key, row) of the products one catalog partition holds: every row but the bookkeeping
    ones and those the catalog fold would not store as they are (not a product, or not under
    its own item id: the table's changelog is open to producers too)."""
    for raw_key, raw_row in db.items():
        key, row = cast(bytes, raw_key), cast(bytes, raw_row)
        if is_bookkeeping(key):
            continue
        try:
            stored_as, product = catalog_record(key, row)
        except InvalidProduct:
            continue
        if product is not None and stored_as == key:
            yield key, row


async def republish_catalog(
    broker: Broker,
    data_dir: Path,
    partitions: int,
    cluster: ClusterKey,
    tries: int = REPUBLISH_TRIES,
) -> int:
    """Write the kept catalog table's products into the `catalog` topic, marked as kept with
    `cluster`'s mark (the module doc); no catalog table: the broker is not asked. Tried again
    as `republish` is (products written twice are the same facts: a full sync takes the last
    of each)."""
    dbs = catalog_dbs(data_dir)
    if not dbs:
        return 0
    send = lambda: _send_catalog(broker, dbs, partitions, cluster)  # noqa: E731
    return await _retrying("the catalog", send, tries)


async def _send_catalog(
    broker: Broker, dbs: list[tuple[int, Path]], partitions: int, cluster: ClusterKey
) -> int:
    await ensure_topics(broker, partitions, ALL_INPUTS)
    producer = AIOKafkaProducer(
        **as_config(broker).aiokafka(), linger_ms=5, max_batch_size=256 * 1024, acks=1
    )
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for number, path in dbs:
            db = _open(path)
            try:
                for key, row in kept_products(db):
                    # where the table holds it (a partition past today's count: where the
                    # producers of the topic would put it)
                    placed = number if number < partitions else default_partition(key, partitions)
                    sent += 1
                    kept = [(KEPT_HEADER, cluster.kept_mark("catalog", placed, key, row))]
                    pending.append(
                        await producer.send("catalog", row, key=key, partition=placed, headers=kept)
                    )
                    if len(pending) >= PENDING_SENDS:
                        await asyncio.gather(*pending)
                        pending.clear()
            finally:
                db.close()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def kept_registry(data_dir: Path) -> list[Entry]:
    """The registry records the worker kept (none on a data dir without a copy)."""
    path = data_dir / REGISTRY_COPY_DIR
    if not path.is_dir():
        return []
    copy = RegistryCopy(path)
    try:
        return copy.entries()
    finally:
        copy.close()


def adopt(data_dir: Path, broker: Broker, partitions: int, cluster: ClusterKey) -> Adopted:
    """Bring the kept state to a new, empty embedded broker (the module doc) with `partitions`
    partitions per topic; no worker runs. `cluster` is the key of the secret the worker is
    given: its catalog fold verifies the kept marks with it."""
    tables = forget_broker(data_dir)

    async def both() -> tuple[int, int]:
        catalog = await republish_catalog(broker, data_dir, partitions, cluster)
        return catalog, await republish(broker, kept_registry(data_dir))

    catalog, registry = asyncio.run(both())
    return Adopted(tables.partitions, tables.removed, registry, catalog)


def start_fresh(data_dir: Path) -> list[str]:
    """`persona run --fresh`: remove the kept tables, the registry copy and the model cache (not
    the local key, not audit.log) and the demo's mark and progress; returns what was removed."""
    removed = []
    for name in ("faust", REGISTRY_COPY_DIR, f"{REGISTRY_COPY_DIR}.secondary", MODEL_CACHE_DIR):
        path = data_dir / name
        if path.exists():
            shutil.rmtree(path)
            removed.append(name)
    for name in (DEMO_MARK, DEMO_PROGRESS):
        (data_dir / name).unlink(missing_ok=True)
    return removed
