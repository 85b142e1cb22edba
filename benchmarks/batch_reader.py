"""What streams/corrupt_batches.py adds to reading fetched records: aiokafka's batch reader
(`PartitionRecords`, what the worker's fetcher iterates per record) over uncompressed and
lz4-compressed batches of event-sized records, without and with the wrapper that passes over
corrupt batches. Printed: nanoseconds per record, the best of `--repeat` runs of each, the
four alternated.

    .venv/bin/python -m benchmarks.batch_reader [--records 200000] [--batch 500] [--repeat 9]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from aiokafka.consumer.fetcher import READ_COMMITTED, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from streams import corrupt_batches

CODECS = {"none": 0, "lz4": 3}


def fetched(records: int, batch: int, codec: int) -> bytes:
    """A fetch answer's record set: `records` page-view events in batches of `batch`."""
    out = bytearray()
    for base in range(0, records, batch):
        builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 30)
        for n in range(min(batch, records - base)):
            user = f"user-{(base + n) % 5000}"
            value = json.dumps(
                {"event_id": f"e-{base + n}", "type": "page_view", "user_id": user, "ts": 1}
            ).encode()
            builder.append(
                n, timestamp=1_700_000_000_000, key=user.encode(), value=value, headers=[]
            )
        built = builder.build()
        built[0:8] = base.to_bytes(8, "big")  # the base offset, as the broker assigns it
        out += built
    return bytes(out)


def read_ns(data: bytes, records: int) -> float:
    """Nanoseconds per record of one read of `data`."""
    reader: Any = PartitionRecords(
        TopicPartition("clickstream", 0),
        MemoryRecords(data),
        [],
        0,
        None,
        None,
        True,
        READ_COMMITTED,
    )
    start = time.perf_counter()
    count = sum(1 for _ in reader)
    elapsed = time.perf_counter() - start
    assert count == records, count
    return elapsed / records * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    data = {name: fetched(args.records, args.batch, c) for name, c in CODECS.items()}
    plain = PartitionRecords._unpack_records
    corrupt_batches.install()
    wrapped = PartitionRecords._unpack_records
    best: dict[tuple[str, bool], float] = {}
    for _ in range(args.repeat):  # alternated, so both see the same machine load
        for name, records in data.items():
            for wrap in (False, True):
                PartitionRecords._unpack_records = wrapped if wrap else plain
                ns = read_ns(records, args.records)
                best[name, wrap] = min(best.get((name, wrap), ns), ns)
    print(f"{args.records} records in batches of {args.batch}, best of {args.repeat} (alternated)")
    for name in CODECS:
        without, with_ = best[name, False], best[name, True]
        print(
            f"  {name:5} aiokafka {without:7.1f} ns/record, with the corrupt-batch wrapper "
            f"{with_:7.1f} ns/record ({with_ - without:+.1f})"
        )


if __name__ == "__main__":
    main()
