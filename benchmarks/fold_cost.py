"""What the fold's own decisions cost, apart from Kafka and Faust (issue 21 item 5).

`benchmarks.ingest` compares the worker with a raw aiokafka + rocksdict fold. This takes Kafka
and Faust out: in one process, over the same records (the REES46 sample, looped, msgpack as
producers send it) and the same kind of store (one rocksdict database per partition), it times
- raw: what `benchmarks.ingest`'s raw baseline does per batch: parse, one read and unpack per
  user, `engine.profile.apply`, one pack and write per user;
- fold: `engine.fold.BatchFold` as the worker drives it (admission, placement, erasure fences,
  identity aliases, dedup, popularity contributions, stream times), then `profile_writes` and one
  write batch per partition.
The ratio fold / raw is the ceiling the whole worker can reach against the raw fold: what remains
between it and `benchmarks.ingest`'s ratio is Faust's delivery and the worker's adapter (commits,
changelog, triggers, HTTP, timers). CPU seconds of this process, rounds alternating, the best
round of each kept (noise only adds time).

    .venv/bin/python -m benchmarks.fold_cost [--passes 6] [--batch 2000] [--rounds 3]

(Not `--loops`: importing Faust reads any argument starting with `--loop` as the name of an
event loop to install, and fails.)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict

from benchmarks import results_file
from engine.catalog import Product
from engine.clock import ManualClock
from engine.events import encode, parse
from engine.fold import BatchFold, Reads, Record, Rules, profile_writes
from engine.placement import partition
from engine.profile import Profile, apply
from engine.sources import read_events
from streams.changelog import write_batch
from streams.keys import alias_of, fence_of, user_key

ROOT = Path(__file__).resolve().parent.parent
REES46 = ROOT.parent / "shared" / "data" / "rees46_oct2019_head" / "2019-Oct_head.csv.gz"
PARTITIONS = 4
LOOP_MS = 4 * 3_600_000  # event time each loop of the sample is shifted by (as benchmarks.ingest)
BOUND = 900 * 1024  # streams.app.MAX_PROFILE_BYTES


def records(loops: int) -> list[Record]:
    base = list(read_events(REES46))
    out: list[Record] = []
    for loop in range(loops):
        for e in base:
            e = replace(e, event_id=f"{e.event_id}-{loop}", ts=e.ts + loop * LOOP_MS)
            key = e.user_id.encode()
            part = partition(key, PARTITIONS)
            out.append(Record("clickstream", part, len(out), key, encode(e), e.ts))
    return out


def _stores(root: Path, name: str) -> list[Rdict]:
    return [Rdict(str(root / f"{name}{p}"), options=Options(raw_mode=True)) for p in range(4)]


def raw(recs: list[Record], batch: int, dbs: list[Rdict]) -> float:
    started = time.process_time()
    for first in range(0, len(recs), batch):
        touched: dict[bytes, tuple[Profile, int]] = {}
        for r in recs[first : first + batch]:
            event = parse(r.value or b"")
            key = event.user_id.encode()
            current = touched.get(key)
            profile = current[0] if current else None
            if current is None:
                stored = dbs[r.partition].get(key)
                profile = None if stored is None else Profile.unpack(stored)
            touched[key] = (apply(profile, event), r.partition)
        for key, (profile, part) in touched.items():
            dbs[part][key] = profile.pack()
    return time.process_time() - started


def fold(recs: list[Record], batch: int, dbs: list[Rdict]) -> float:
    def stored(user: bytes, part: int) -> Profile | None:
        value = dbs[part].get(user)
        return None if value is None else Profile.unpack(value)

    def fence(user: bytes, part: int) -> int | None:
        value = dbs[part].get(fence_of(user))
        return None if value is None else int(value)

    memo: dict[bytes, int] = {}  # the worker's PartitionMemo

    def placed(key: bytes, part: int) -> bool:
        found = memo.get(key)
        if found is None:
            found = memo[key] = partition(key, PARTITIONS)
        return found == part

    products: dict[str, Product | None] = {}  # the worker's ProductMemo (no catalog here)
    reads = Reads(
        user_key=user_key,
        profile=stored,
        fence=fence,
        product=lambda item: products.setdefault(item, None),
        placed=placed,
        aliased=lambda user, part: dbs[part].get(alias_of(user)) is not None,
    )
    rules = Rules(lateness_ms=7 * 86_400_000, skew_ms=300_000)
    clock = ManualClock(max(r.timestamp_ms for r in recs) + 1)
    times: dict[tuple[str, int], int] = {}
    where: Callable[[Any], int] = lambda record: record.partition  # noqa: E731
    started = time.process_time()
    for first in range(0, len(recs), batch):
        batch_fold: BatchFold[Record] = BatchFold(reads, rules, clock, times)
        for r in recs[first : first + batch]:
            batch_fold.event(r, r)
        folded = batch_fold.result()
        times.update(folded.stream_time)
        writes, _ = profile_writes(folded.touched, where, BOUND)
        for part, items in writes.items():
            write_batch(dbs[part], items)  # as the worker's TableWriter stores them
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passes", type=int, default=6, help="passes over the REES46 sample")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not REES46.exists():
        sys.exit(f"needs {REES46} (the REES46 sample in ../shared/data)")
    recs = records(args.passes)
    best = {"raw": float("inf"), "fold": float("inf")}
    for _ in range(args.rounds):
        for name, run in (("raw", raw), ("fold", fold)):
            tmp = Path(tempfile.mkdtemp(prefix="persona-foldcost-"))
            dbs = _stores(tmp, name)
            try:
                best[name] = min(best[name], run(recs, args.batch, dbs))
            finally:
                for db in dbs:
                    db.close()
                shutil.rmtree(tmp, ignore_errors=True)
    rates = {name: len(recs) / seconds for name, seconds in best.items()}
    print(f"\n{len(recs):,} REES46 records, batches of {args.batch:,}, best of {args.rounds}")
    print(f"raw fold (parse, apply, one read and write per user): {rates['raw']:>9,.0f} events/s")
    print(f"BatchFold (the worker's decisions) + writes:          {rates['fold']:>9,.0f} events/s")
    print(f"fold / raw: {rates['fold'] / rates['raw']:.2f} (the ceiling for the worker's ratio)")
    out = results_file.save("fold-cost", {"records": len(recs), "batch": args.batch, **rates})
    print(f"raw figures: {out}")


if __name__ == "__main__":
    main()
