"""The fold's catalog read behind the product memo (issue 21): the catalog table's own `get`
against the direct read of its RocksDB partitions (`PersonaStreams._stored_product`), over
`--items` products of `benchmarks.scale`'s catalog in Faust's real RocksDB store (no broker).
Prints microseconds per lookup of known items (drawn uniformly) and of unknown ones, the best
of the rounds (they alternate).

    .venv/bin/python -m benchmarks.product_lookup [--items 100000] [--lookups 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from faust.types import TP

from benchmarks.scale import products
from engine.placement import partition
from engine.settings import Settings
from streams.app import PersonaStreams


def per_lookup(read: Callable[[bytes], object], keys: list[bytes]) -> float:
    started = time.perf_counter()
    for key in keys:
        read(key)
    return (time.perf_counter() - started) / len(keys) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--lookups", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="persona-lookup-"))
    try:
        streams = PersonaStreams(Settings(data_dir=tmp), "kafka://127.0.0.1:9")
        n = streams.settings.partitions
        records = []
        for offset, product in enumerate(products(args.items)):
            key = product.item_id.encode()
            where = partition(key, n)
            message = SimpleNamespace(
                tp=TP("persona-catalog-changelog", where),
                offset=offset,
                partition=where,
                key=key,
                value=product.pack(),
            )
            records.append(SimpleNamespace(message=message))
        streams.catalog.apply_changelog_batch(records)  # as changelog records arrive
        rng = random.Random(1)
        known = [rng.choice(records).message.key for _ in range(args.lookups)]
        unknown = [b"unknown-%d" % i for i in range(args.lookups)]
        reads = {"table get": streams.catalog.get, "direct": streams._stored_product}
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for name, read in reads.items():
                for label, keys in (("known", known), ("unknown", unknown)):
                    us = per_lookup(read, keys)
                    best[(name, label)] = min(best.get((name, label), us), us)
        print(f"catalog of {args.items:,} products, {n} partitions; best of {args.rounds} rounds")
        for (name, label), us in best.items():
            print(f"  {name:10} {label:8} {us:6.1f} us per lookup")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
