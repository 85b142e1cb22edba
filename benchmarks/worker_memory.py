"""Worker memory against users (issue 21 item 2): does a worker's RSS after folding N users'
events stay bounded by its settings, and if not, where does it go?

For each `--users` N: `benchmarks.scale`'s synthetic load (N users x `--events-per-user`
events over `--items` products, the same generator and seed) is produced into a fresh embedded
broker, then one `persona worker` folds it. Every `--every` seconds and once it has folded them
all it takes the worker's RSS, /proc/PID/smaps split into anonymous and file-backed memory (and
the anonymous mappings of 64 MiB glibc malloc arenas), and the RocksDB figures of its /metrics
(`persona_rocksdb_*`: block cache, memtables, table readers, open databases). Printed per run,
kept in benchmarks/results/worker-memory-<time>.json.

    .venv/bin/python -m benchmarks.worker_memory [--users 20000 100000] [--items 5000]
        [--partitions 8] [--memory-mb 256] [--env NAME=VALUE ...]

`--env` passes settings to the worker only (e.g. MALLOC_ARENA_MAX=2 to compare); `--at-end` runs
a shell command once the worker has folded everything, before it is stopped ({pid}: the
worker's), for a diagnosis of the worker as it is then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import results_file  # noqa: E402
from benchmarks.scale import env_for, events, preload, start, stop, write_events  # noqa: E402
from benchmarks.serving import get, processed  # noqa: E402
from streams.broker import EmbeddedBroker, free_port  # noqa: E402

ARENA_BYTES = 64 * 1024 * 1024  # glibc's per-thread malloc heaps are reserved 64 MiB at a time


def smaps(pid: int) -> dict[str, float]:
    """MB of the process's resident memory: anonymous, file-backed, and the anonymous memory of
    mappings that look like malloc arenas (64 MiB reservations: heap pieces of size 64 MiB in
    total with their guard part), and the number of such arenas."""
    anon = file = arena_rss = heap = 0
    arenas = 0
    size = rss = 0
    name = ""
    head = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")
    pieces: list[tuple[int, int, int, str]] = []  # start, size, rss kB, name

    def close() -> None:
        if size:
            pieces.append((first, size, rss, name))

    first = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = head.match(line)
        if m:
            close()
            first, end = int(m.group(1), 16), int(m.group(2), 16)
            size, rss, name = end - first, 0, m.group(3)
        elif line.startswith("Rss:"):
            rss = int(line.split()[1])
    close()
    for i, (begin, length, kb, label) in enumerate(pieces):
        if label and not label.startswith("["):
            file += kb
            continue
        anon += kb
        heap += kb if label == "[heap]" else 0  # the main malloc arena (brk)
        # an arena: a 64 MiB aligned region, its used part followed by its reserved rest
        if label == "" and begin % ARENA_BYTES == 0:
            nxt = pieces[i + 1] if i + 1 < len(pieces) else None
            whole = length + (nxt[1] if nxt and nxt[0] == begin + length and not nxt[3] else 0)
            if whole == ARENA_BYTES:
                arenas += 1
                arena_rss += kb
    return {
        "anon_mb": anon / 1024,
        "file_mb": file / 1024,
        "heap_mb": heap / 1024,
        "arena_mb": arena_rss / 1024,
        "arenas": arenas,
    }


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def scrape(base: str) -> tuple[dict[str, float], int]:
    """The worker's persona_rocksdb_* gauges (empty before they existed) and its late events."""
    _status, body = get(base + "/metrics")
    out, late = {}, 0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("persona_rocksdb_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        elif line.startswith("persona_events_late_total "):
            late = int(float(line.split()[-1]))
    return out, late


def sample(pid: int, base: str, folded: int) -> dict[str, Any]:
    rocksdb, late = scrape(base)
    return {
        "folded": folded,
        "rss_mb": status_kb(pid, "VmRSS") / 1024,
        "hwm_mb": status_kb(pid, "VmHWM") / 1024,
        "threads": status_kb(pid, "Threads"),
        **smaps(pid),
        "rocksdb": rocksdb,
        "late": late,
    }


def one(args: argparse.Namespace, users: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="persona-wmem-"))
    try:
        data = tmp / "data"
        data.mkdir()
        load = tmp / "events.jsonl.gz"
        n = write_events(load, events(users, args.events_per_user, args.items, seed=1))
        env = {**env_for(args.partitions), "PERSONA_ROCKSDB_MEMORY_MB": str(args.memory_mb)}
        env.update(dict(kv.split("=", 1) for kv in args.env))
        with EmbeddedBroker(log_file=tmp / "broker.log") as broker:
            asyncio.run(preload(broker.url, args.partitions, load, args.items))
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            started = time.monotonic()
            worker = start("worker", broker.url, data, port, env)
            samples = [sample(worker.pid, base, processed(base))]
            try:
                last = time.monotonic()
                while (done := processed(base)) < n:
                    if time.monotonic() - started > args.timeout:
                        raise RuntimeError(f"not folded within {args.timeout} s: {done} of {n}")
                    if time.monotonic() - last >= args.every:
                        samples.append(sample(worker.pid, base, done))
                        print(f"  {users:,}: {json.dumps(samples[-1])}", flush=True)
                        last = time.monotonic()
                    time.sleep(0.5)
                fold_s = time.monotonic() - started
                time.sleep(args.settle)
                end = sample(worker.pid, base, processed(base))
                if args.at_end:  # a diagnosis of the worker as it is now, e.g. a heap dump
                    subprocess.run(args.at_end.format(pid=worker.pid), shell=True, check=False)
            finally:
                stop(worker)
        return {
            "users": users,
            "events": n,
            "fold_s": fold_s,
            "end": end,
            "samples": samples,
            "env": args.env,
            "load_average": os.getloadavg(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, nargs="+", default=[20_000, 100_000])
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--events-per-user", type=int, default=3)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--memory-mb", type=int, default=256, help="PERSONA_ROCKSDB_MEMORY_MB")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the worker")
    p.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after the fold, then sample")
    p.add_argument("--timeout", type=float, default=7200.0)
    p.add_argument("--at-end", default="", help="shell command run once folded ({pid}: worker)")
    args = p.parse_args()
    runs = []
    for users in args.users:
        r = one(args, users)
        runs.append(r)
        e = r["end"]
        print(
            f"{users:,} users ({r['events']:,} events, {r['fold_s']:.0f} s, {e['late']:,} late):"
            f" RSS {e['rss_mb']:.0f} MB (peak {e['hwm_mb']:.0f}), anonymous {e['anon_mb']:.0f},"
            f" file {e['file_mb']:.0f}, [heap] {e['heap_mb']:.0f}, in {e['arenas']} malloc"
            f" arenas {e['arena_mb']:.0f}, threads {e['threads']}; rocksdb {e['rocksdb']};"
            f" load average {r['load_average']}",
            flush=True,
        )
    out = results_file.save("worker-memory", runs)
    print(f"raw figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
