"""What republishing the kept catalog adds to a `persona run` restart on the embedded broker
(streams/adopt.py `republish_catalog`): the catalog table's products written into the new
broker's empty `catalog` topic before the worker starts, so a full catalog sync finds them.

For each `--items` N: a data dir whose catalog table holds N synthetic products (as the worker
stores them, each in its item's partition) and a fresh embedded broker. Printed: the seconds
`forget_broker` takes (what adoption did before), the seconds `republish_catalog` takes (what it
adds to the start-up: the worker starts after it), and the seconds a full sync's read of the
topic (`missing_products`) then takes, with how many products it would mark. With `--worker`, a
`persona worker` is then started on the data dir and the seconds from its start until it is
ready and until its catalog fold has passed over every republished record (its group's committed
offsets reach the topic's end) are printed too.

    .venv/bin/python -m benchmarks.adopt_catalog [--items 100000] [--partitions 8] [--worker]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from benchmarks import results_file  # noqa: E402
from benchmarks.recovery_memory import product  # noqa: E402
from benchmarks.serving import SECRET, get  # noqa: E402
from engine.placement import partition  # noqa: E402
from engine.signing import ClusterKey  # noqa: E402
from persona.catalog_sync import missing_products  # noqa: E402
from streams.admin import bootstrap_servers  # noqa: E402
from streams.adopt import _open, forget_broker, republish_catalog  # noqa: E402
from streams.broker import EmbeddedBroker, free_port  # noqa: E402
from streams.changelog import write_batch  # noqa: E402
from streams.readers import table_dir  # noqa: E402

# the worker's secret: the republished records' kept marks verify with it
CLUSTER_SECRET = os.environ.get("PERSONA_CLUSTER_SECRET", "bench-" + "c" * 32)


def kept_catalog(data: Path, items: int, partitions: int) -> int:
    """The catalog table a worker leaves in `data`: `items` products in their partitions;
    returns the bytes of the rows."""
    rows: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in range(partitions)}
    size = 0
    for n in range(items):
        row = product(n).pack()
        key = f"item-{n}".encode()
        rows[partition(key, partitions)].append((key, row))
        size += len(row)
    root = table_dir(data)
    root.mkdir(parents=True)
    for number, items_of in rows.items():
        db = _open(root / f"catalog-{number}.db")
        try:
            write_batch(db, items_of)
        finally:
            db.close()
    return size


async def _group_at_end(broker: str, partitions: int) -> bool:
    """Whether the worker's group committed the `catalog` topic's end on every partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(broker),
                                group_id="persona", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition("catalog", p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return all([(await consumer.committed(tp) or 0) >= ends[tp] for tp in tps])
    finally:
        await consumer.stop()


def worker(broker: str, data: Path, partitions: int) -> dict[str, float]:
    """Seconds from a worker's start until ready, and until its catalog fold passed over every
    republished record."""
    port = free_port()
    env = {
        **os.environ,
        "PERSONA_PARTITIONS": str(partitions),
        "PERSONA_API_KEYS": f"bench:{SECRET}:content:read",
        "PERSONA_LOG_LEVEL": "warning",
        "PERSONA_CLUSTER_SECRET": CLUSTER_SECRET,
    }
    cmd = [sys.executable, "-m", "persona", "worker", "--broker", broker, "--host", "127.0.0.1",
           "--port", str(port), "--data-dir", str(data)]  # fmt: skip
    with (data.parent / "worker.log").open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        while get(f"http://127.0.0.1:{port}/readyz", 2.0)[0] != 200:
            if proc.poll() is not None or time.monotonic() - started > 1800:
                raise RuntimeError(f"worker not ready: see {data.parent / 'worker.log'}")
            time.sleep(0.2)
        ready_s = time.monotonic() - started
        while not asyncio.run(_group_at_end(broker, partitions)):
            if time.monotonic() - started > 1800:
                raise RuntimeError("the catalog fold did not reach the topic's end")
            time.sleep(0.5)
        return {"ready_s": ready_s, "passed_over_s": time.monotonic() - started}
    finally:
        proc.terminate()
        proc.wait(60)


def one(items: int, partitions: int, with_worker: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="persona-adopt-"))
    try:
        data = tmp / "data"
        size = kept_catalog(data, items, partitions)
        with EmbeddedBroker(log_file=tmp / "broker.log") as broker:
            began = time.monotonic()
            forget_broker(data)
            forget_s = time.monotonic() - began
            began = time.monotonic()
            cluster = ClusterKey(CLUSTER_SECRET)
            sent = asyncio.run(republish_catalog(broker.url, data, partitions, cluster))
            republish_s = time.monotonic() - began
            began = time.monotonic()
            marked = len(asyncio.run(missing_products(broker.url, {"item-0"})))
            read_s = time.monotonic() - began
            result: dict[str, Any] = {
                "items": items, "partitions": partitions, "row_bytes": size, "sent": sent,
                "forget_s": forget_s, "republish_s": republish_s, "full_sync_read_s": read_s,
                "full_sync_would_mark": marked,
            }  # fmt: skip
            if with_worker:
                result["worker"] = worker(broker.url, data, partitions)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, nargs="+", default=[100_000])
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--worker", action="store_true", help="then start a worker on the data dir")
    args = p.parse_args()
    runs = []
    for items in args.items:
        r = one(items, args.partitions, args.worker)
        runs.append(r)
        print(
            f"{items:>9,} products ({r['row_bytes'] / 1e6:.1f} MB of rows), {args.partitions} "
            f"partitions: forget_broker {r['forget_s']:.2f} s, republish_catalog "
            f"{r['republish_s']:.2f} s ({r['sent']:,} records); a full sync's read of the topic "
            f"{r['full_sync_read_s']:.2f} s, would mark {r['full_sync_would_mark']:,}",
            flush=True,
        )
        if "worker" in r:
            w = r["worker"]
            print(
                f"  worker: ready in {w['ready_s']:.1f} s, catalog fold past the republished "
                f"records {w['passed_over_s']:.1f} s after its start",
                flush=True,
            )
    out = results_file.save("adopt-catalog", runs)
    print(f"raw figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
