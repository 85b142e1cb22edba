"""Memory of a table recovery (issue 21 item 2): a worker started on an empty data dir rebuilds
the profiles table from its changelog. How far does its RSS rise for a large changelog, and is
that bounded by settings rather than by the number of users?

For each `--users` N: N packed profiles (a real 3-event profile, its user id changed, ~0.3 KB)
are produced straight into `persona-profiles-changelog` on a fresh embedded broker (and with
`--items` M, M synthetic products into `persona-catalog-changelog`), then one `persona worker`
starts on an empty data dir. Printed per run: seconds until `/readyz` answers 200 (recovery
done, models loaded, the catalog's content indexed), the worker's peak RSS until then (VmHWM) and
its RSS then, and the slowest `/healthz` answer meanwhile (polled every 0.5 s from the first
answer). With `--restart` the worker is then stopped and started again on the data dir it left
(a restart on kept state: no changelog to read, the catalog's content indexed again) and the
same figures are printed for that start.

    .venv/bin/python -m benchmarks.recovery_memory [--users 200000 1000000] [--partitions 8]
        [--memory-mb 256] [--items 100000] [--restart]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.partitioner import DefaultPartitioner  # noqa: E402

from benchmarks import results_file  # noqa: E402
from benchmarks.serving import SECRET, get  # noqa: E402
from engine.catalog import Product  # noqa: E402
from engine.events import validate  # noqa: E402
from engine.profile import Profile, apply  # noqa: E402
from streams.admin import bootstrap_servers, ensure_topics  # noqa: E402
from streams.broker import EmbeddedBroker, free_port  # noqa: E402
from streams.keys import LAYOUT, LAYOUT_KEY, user_key  # noqa: E402

CHANGELOG = "persona-profiles-changelog"
CATALOG_CHANGELOG = "persona-catalog-changelog"
WORDS = tuple(f"word{n}" for n in range(2_000))
T0 = 1_767_225_600_000


def template() -> Profile:
    """A shopper's profile after a product view, an add to cart and a purchase."""
    profile = None
    for n, kind in enumerate(("product_view", "add_to_cart", "purchase")):
        event = validate(
            {
                "event_id": f"t-{n}",
                "type": kind,
                "user_id": "u0",
                "ts": T0 + n,
                "item_id": f"i{n}",
                "quantity": 1,
                "price": 9.5,
                "currency": "GBP",
            }
        )
        profile = apply(profile, event)
    assert profile is not None
    return profile


def product(n: int) -> Product:
    """Synthetic item `n`: a five-word title out of WORDS, one of 200 categories and 500 brands."""
    title = " ".join(WORDS[(n * k * 7919 + k) % len(WORDS)] for k in range(1, 6))
    return Product(
        f"item-{n}",
        title,
        f"https://shop.example/p/{n}",
        f"https://shop.example/p/{n}.jpg",
        1.0 + (n * 37) % 400,
        "EUR",
        category=f"category {n % 200}",
        brand=f"brand {n % 500}",
    )


async def load_changelog(broker: str, partitions: int, users: int, items: int = 0) -> float:
    """Produce what a worker's changelogs hold for `users` profiles and `items` products: each
    partition's layout mark, every profile in its user's partition, every product in its item's
    partition of the catalog's changelog; returns seconds taken."""
    await ensure_topics(broker, partitions, [CHANGELOG, CATALOG_CHANGELOG])
    base, placed = template(), list(range(partitions))
    partition_of = DefaultPartitioner()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(broker),
        linger_ms=5,
        max_batch_size=256 * 1024,
        acks=1,
    )
    await producer.start()
    started = time.monotonic()
    try:
        for partition in placed:
            await producer.send(CHANGELOG, LAYOUT, key=LAYOUT_KEY, partition=partition)
        for n in range(users):
            base.user_id = uid = f"u{n}"
            at = partition_of(uid.encode(), placed, placed)
            await producer.send(CHANGELOG, base.pack(), key=user_key(uid), partition=at)
        for n in range(items):
            row = product(n)
            key = row.item_id.encode()
            at = partition_of(key, placed, placed)
            await producer.send(CATALOG_CHANGELOG, row.pack(), key=key, partition=at)
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic() - started


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def recover(
    broker: str, data: Path, partitions: int, memory_mb: int, users: int, items: int = 0
) -> dict[str, Any]:
    """Start a worker on `data` and watch it until it is ready; then stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PERSONA_PARTITIONS": str(partitions),
        "PERSONA_API_KEYS": f"bench:{SECRET}:content:read",
        "PERSONA_LOG_LEVEL": "warning",
        "PERSONA_ROCKSDB_MEMORY_MB": str(memory_mb),
        "PERSONA_CLUSTER_SECRET": os.environ.get("PERSONA_CLUSTER_SECRET", "bench-" + "c" * 32),
    }
    cmd = [
        sys.executable,
        "-m",
        "persona",
        "worker",
        "--broker",
        broker,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data),
    ]
    with (data.parent / "worker.log").open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    health: dict[str, float] = {"polls": 0, "failed": 0, "slowest_s": 0.0}
    flag = threading.Event()
    poller = threading.Thread(target=poll_health, args=(base, flag, health), daemon=True)
    poller.start()
    started = time.monotonic()
    try:
        while get(base + "/readyz", 2.0)[0] != 200:
            if proc.poll() is not None or time.monotonic() - started > 3600:
                raise RuntimeError(f"worker not ready: see {data.parent / 'worker.log'}")
            time.sleep(0.5)
        ready_s = time.monotonic() - started
        flag.set()
        for n in (0, users // 2, users - 1):  # recovered: the first, middle and last profiles
            if get(f"{base}/v1/users/u{n}/profile")[0] != 200:
                raise RuntimeError(f"profile u{n} not recovered")
        if items and get(f"{base}/v1/items/item-{items - 1}/similar?format=json")[0] != 200:
            raise RuntimeError(f"item-{items - 1} not recovered")
        poller.join()
        return {
            "ready_s": ready_s,
            "peak_rss_mb": status_kb(proc.pid, "VmHWM") / 1024,
            "rss_ready_mb": status_kb(proc.pid, "VmRSS") / 1024,
            "healthz": health,
        }
    finally:
        flag.set()
        proc.terminate()
        proc.wait(60)


def poll_health(base: str, flag: threading.Event, out: dict[str, float]) -> None:
    """/healthz every 0.5 s from its first answer on: polls, failures (none in 5 s), slowest."""
    answered = False
    while not flag.is_set():
        began = time.monotonic()
        status, _ = get(base + "/healthz", 5.0)
        took = time.monotonic() - began
        answered = answered or status == 200
        if answered:
            out["polls"] += 1
            out["failed"] += status != 200
            out["slowest_s"] = max(out["slowest_s"], took)
        time.sleep(0.5)


def one(
    users: int, partitions: int, memory_mb: int, items: int = 0, restart: bool = False
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="persona-recovery-"))
    try:
        data = tmp / "data"
        data.mkdir()
        with EmbeddedBroker(log_file=tmp / "broker.log") as broker:
            load_s = asyncio.run(load_changelog(broker.url, partitions, users, items))
            result = recover(broker.url, data, partitions, memory_mb, users, items)
            if restart:
                result["restart"] = recover(broker.url, data, partitions, memory_mb, users, items)
        result.update(
            users=users,
            items=items,
            partitions=partitions,
            memory_mb=memory_mb,
            load_s=load_s,
            profile_bytes=len(template().pack()),
        )
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, nargs="+", default=[200_000, 1_000_000])
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--memory-mb", type=int, default=256, help="PERSONA_ROCKSDB_MEMORY_MB")
    p.add_argument("--items", type=int, default=0, help="products in the catalog's changelog")
    p.add_argument("--restart", action="store_true", help="then a restart on the kept state")
    args = p.parse_args()
    runs = []
    for users in args.users:
        r = one(users, args.partitions, args.memory_mb, args.items, args.restart)
        runs.append(r)
        for label, figures in (("recovery", r), ("restart", r.get("restart"))):
            if figures is not None:
                print(
                    f"{users:>9,} profiles, {args.items:,} items, {label}: ready in "
                    f"{figures['ready_s']:.1f} s, peak RSS {figures['peak_rss_mb']:.0f} MB, "
                    f"RSS when ready {figures['rss_ready_mb']:.0f} MB; /healthz "
                    f"{figures['healthz']}",
                    flush=True,
                )
    out = results_file.save("recovery", runs)
    print(f"raw figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
