"""One RocksDB memory budget per process (issue 21 item 2).

Faust opens one RocksDB database per table partition and gives each its own block cache of 2 GiB
(`faust.stores.rocksdb.DEFAULT_BLOCK_CACHE_SIZE`), filled as data is read, with index and filter
blocks held outside any cache: a worker's memory grew with the data it had read (6.6x for 10x the
users at 1M). Here every database of the process shares one LRU block cache of
`PERSONA_ROCKSDB_MEMORY_MB`; index and filter blocks live in it; the memtables are charged to it
through one write buffer manager (a quarter of the budget) that flushes the largest when they pass
it. What RocksDB holds is then bounded by the setting, whatever the number of users or partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

MEMTABLE_SHARE = 4  # the memtables may take up to 1/MEMTABLE_SHARE of the budget
MAX_WRITE_BUFFERS = 2  # per database: one being written, one being flushed
# Bloom filter bits per key: RocksDB's usual 10 (~1 % false positives) where Faust's default of 3
# lets roughly a fifth of the misses of each table file read a data block. The fold looks up
# keys that mostly do not exist (a new user's profile, every user's erasure fence and identity
# alias); a miss in a 300,000-key database of 10 files took 0.6-1.1 us at 10 bits against
# 0.9-1.4 us at 3 (two runs each), for ~1.25 bytes of filter per key in the block cache.
BLOOM_BITS = 10
# RocksDB's figures of one database, summed over the process's databases (`RocksMemory.figures`)
PROPERTIES = {
    "memtable_bytes": "rocksdb.size-all-mem-tables",
    "table_readers_bytes": "rocksdb.estimate-table-readers-mem",
}
HELP = {
    "budget_bytes": "PERSONA_ROCKSDB_MEMORY_MB: what the RocksDB tables of this process may hold.",
    "block_cache_bytes": "Bytes in the shared RocksDB block cache (memtables' charge included).",
    "block_cache_pinned_bytes": "Bytes of the shared block cache pinned by readers and tables.",
    "memtable_bytes": "Bytes of every RocksDB memtable of this process (active and immutable).",
    "table_readers_bytes": "RocksDB's estimate of its table readers' memory outside the cache.",
    "databases": "RocksDB databases open in this process (table partitions).",
}


class RocksMemory:
    """The process's shared block cache and write buffer manager."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.cache = rocksdict.Cache(budget_bytes)
        self.buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            budget_bytes // MEMTABLE_SHARE, False, self.cache
        )
        self._sources: list[Callable[[], Iterable[Any]]] = []  # each: the open databases of one

    def watch(self, databases: Callable[[], Iterable[Any]]) -> None:
        """Count the databases `databases()` gives (open rocksdict.Rdict) in `figures`."""
        self._sources.append(databases)

    def figures(self) -> dict[str, int]:
        """What RocksDB holds now, in bytes: the shared cache, and the memtables and table
        readers of every watched database (RocksDB's own properties, summed)."""
        out = {
            "budget_bytes": self.budget,
            "block_cache_bytes": int(self.cache.get_usage()),
            "block_cache_pinned_bytes": int(self.cache.get_pinned_usage()),
            **dict.fromkeys(PROPERTIES, 0),
            "databases": 0,
        }
        for source in self._sources:
            for db in list(source()):
                try:
                    values = {k: db.property_int_value(p) for k, p in PROPERTIES.items()}
                except Exception:  # closed meanwhile (a rebalance): not held any more
                    continue
                out["databases"] += 1
                for key, value in values.items():
                    out[key] += int(value or 0)
        return out

    def metric_lines(self) -> list[str]:
        """`figures` as Prometheus text: persona_rocksdb_<figure> gauges."""
        lines = []
        for key, value in self.figures().items():
            name = f"persona_rocksdb_{key}"
            lines += [f"# HELP {name} {HELP[key]}", f"# TYPE {name} gauge", f"{name} {value}"]
        return lines

    def usage(self) -> int:
        """Bytes the block cache holds now (memtables charged to it included)."""
        return int(self.cache.get_usage())

    def options(self, base: RocksDBOptions) -> BoundedOptions:
        return BoundedOptions(base, self)

    def within(self, options: Any) -> Any:
        """`options` (rocksdict.Options) with the shared cache and write buffer manager."""
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(BLOOM_BITS, True)
        table.set_block_cache(self.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(self.buffers)
        options.set_max_write_buffer_number(MAX_WRITE_BUFFERS)
        return options

    def bound(self, table: Any) -> None:
        """Make a Faust table's store open its databases within this budget (before any opens)."""
        store = table.data
        store.rocksdb_options = self.options(store.rocksdb_options)
        self.watch(lambda: store._dbs.values())


class BoundedOptions(RocksDBOptions):
    """Faust's options with the shared cache and write buffer manager put in."""

    def __init__(self, base: RocksDBOptions, memory: RocksMemory) -> None:
        self.__dict__.update(vars(base))
        self.memory = memory

    def as_options(self) -> Any:
        return self.memory.within(super().as_options())

    def open(self, path: Path, *, read_only: bool = False) -> Any:
        """Faust's open, with the options given for the default column family too: without
        them rocksdict reopens an existing database with the options its files recorded, and a
        fresh cache of RocksDB's default size per database."""
        options = self.as_options()
        options.set_db_paths([rocksdict.DBPath(str(path), self.target_file_size_base)])
        access = (
            rocksdict.AccessType.read_write()
            if self.ttl is None
            else rocksdict.AccessType.with_ttl(self.ttl)
        )
        db = rocksdict.Rdict(
            str(path), options=options, column_families={"default": options}, access_type=access
        )
        db.set_read_options(rocksdict.ReadOptions())
        return db
