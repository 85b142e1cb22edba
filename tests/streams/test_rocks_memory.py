"""One RocksDB memory budget per process (streams/rocks_memory.py, issue 21 item 2): the databases
of every table partition share one block cache, memtables charged to it, so what RocksDB holds
stays within `PERSONA_ROCKSDB_MEMORY_MB` however much data is written and read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import faust
from faust.stores.rocksdb import RocksDBOptions
from rocksdict import AccessType, Options, Rdict

from streams.readers import _options
from streams.rocks_memory import BoundedOptions, RocksMemory

MIB = 1024 * 1024


def _fill(db: Rdict, n: int) -> None:
    for k in range(n):
        db[b"u%08d" % k] = os.urandom(200)


def _read(db: Rdict, n: int) -> None:
    for k in range(0, n, 2):
        assert db[b"u%08d" % k] is not None


def test_many_databases_stay_within_one_budget(tmp_path: Path) -> None:
    memory = RocksMemory(8 * MIB)
    base = RocksDBOptions(use_rocksdict=True, write_buffer_size=4 * MIB)
    dbs = [memory.options(base).open(tmp_path / f"p{i}") for i in range(6)]
    for db in dbs:  # 6 x 40,000 x ~210 bytes: ~50 MB, six times the budget
        _fill(db, 40_000)
    written = memory.usage()
    assert 0 < written <= memory.budget  # the memtables are charged to the shared cache
    for db in dbs:
        db.flush()
        _read(db, 40_000)
    # reads fill the cache to its capacity; RocksDB's LRU cache (not strict) may pass it by what
    # is pinned, which it cannot evict (index and filter blocks, blocks in use): ~0.7 MiB here
    assert 0 < memory.usage() <= memory.budget + memory.cache.get_pinned_usage()
    for db in dbs:
        db.close()


def test_a_faust_table_opens_its_partitions_within_the_budget(tmp_path: Path) -> None:
    app = faust.App("rocks-memory-test", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("t", options={"driver": "rocksdict", "write_buffer_size": 2 * MIB})
    memory = RocksMemory(4 * MIB)
    memory.bound(table)
    store: Any = table.data
    options = store.rocksdb_options
    assert isinstance(options, BoundedOptions)
    assert options.write_buffer_size == 2 * MIB  # the table's own options are kept
    before = memory.usage()
    db = store._db_for_partition(0)
    _fill(db, 20_000)
    assert memory.usage() > before  # the store's database charges the shared cache
    assert memory.usage() <= memory.budget
    db.flush()
    store._dbs.clear()
    db.close()
    again = RocksMemory(4 * MIB)  # a restart opens the existing database: still in the budget
    store.rocksdb_options = again.options(options)
    reopened = store._db_for_partition(0)
    before = again.usage()
    _read(reopened, 20_000)
    assert before < again.usage() <= again.budget


def test_a_reader_secondary_reads_through_the_shared_cache(tmp_path: Path) -> None:
    primary = Rdict(str(tmp_path / "primary"), Options(raw_mode=True))
    _fill(primary, 20_000)
    primary.flush()
    primary.compact_range(None, None)  # table files, which is what a secondary reads blocks of
    memory = RocksMemory(4 * MIB)
    options = _options(memory)
    secondary = Rdict(
        str(tmp_path / "primary"),
        options,
        column_families={"default": options},
        access_type=_secondary(tmp_path),
    )
    before = memory.usage()
    _read(secondary, 20_000)
    assert before < memory.usage() <= memory.budget
    secondary.close()
    primary.close()


def _secondary(tmp_path: Path) -> AccessType:
    return AccessType.secondary(str(tmp_path / "secondary"))


def test_figures_are_rocksdbs_own_summed_over_the_watched_databases(tmp_path: Path) -> None:
    memory = RocksMemory(64 * MIB)  # memtables up to 16 MiB: nothing flushed early
    base = RocksDBOptions(use_rocksdict=True, write_buffer_size=4 * MIB)
    dbs = [memory.options(base).open(tmp_path / f"p{i}") for i in range(3)]
    memory.watch(lambda: dbs)
    empty = memory.figures()
    assert empty["databases"] == 3 and empty["budget_bytes"] == 64 * MIB
    for db in dbs:
        _fill(db, 5_000)
    written = memory.figures()
    memtables = sum(db.property_int_value("rocksdb.size-all-mem-tables") for db in dbs)
    assert written["memtable_bytes"] == memtables > 5_000 * 200 * 3 > empty["memtable_bytes"]
    for db in dbs:
        db.flush()
    flushed = memory.figures()
    assert flushed["memtable_bytes"] < written["memtable_bytes"]
    assert flushed["table_readers_bytes"] > 0  # one table file per database now
    assert flushed["block_cache_bytes"] == memory.usage()
    dbs.pop().close()
    assert memory.figures()["databases"] == 2
    for db in dbs:
        db.close()


def test_a_bound_faust_table_is_watched_and_the_figures_are_gauges(tmp_path: Path) -> None:
    app = faust.App("rocks-memory-figures", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("t", options={"driver": "rocksdict"})
    memory = RocksMemory(64 * MIB)
    memory.bound(table)
    assert memory.figures()["databases"] == 0
    db: Any = cast(Any, table.data)._db_for_partition(1)
    _fill(db, 1_000)
    figures = memory.figures()
    assert figures["databases"] == 1 and figures["memtable_bytes"] > 1_000 * 200
    lines = memory.metric_lines()
    samples = dict(line.split() for line in lines if not line.startswith("#"))
    assert samples["persona_rocksdb_databases"] == "1"
    assert int(samples["persona_rocksdb_memtable_bytes"]) > 1_000 * 200
    assert "# TYPE persona_rocksdb_block_cache_bytes gauge" in lines
    db.close()
