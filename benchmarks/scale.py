# ruff: noqa: E501  (the report table reads better unwrapped)
"""Cost as a shop grows (`make bench-scale`, issue 21 item 6): N users, an M-item catalog, a model
trained on them, one worker and one reader on the embedded broker.

Phases, each printed and kept in benchmarks/results/scale-<time>.json:

1. data: M synthetic products (categories, brands, prices) and N synthetic shoppers with
   `--events-per-user` events each (product views, carts, purchases; items Zipf-skewed), written
   once as a JSON-lines file (the training input) and streamed from it, never held in memory;
2. training: `persona models train recs --out` on that file, in a child process: its wall time
   and peak RSS (training's cost, item 4);
3. model load: `models.recs.Recommender.load` of the trained artifact in a fresh process: seconds
   and RSS added, against the artifact's array bytes (item 3); the model is then published and
   activated, and the worker's and the reader's RSS are taken before and after;
4. ingest: the catalog and every event pre-loaded into the topics, then one worker folds them:
   events/s, and the raw aiokafka + rocksdict fold of the same topics in the same run (ratio);
5. state: profile bytes on disk per user, as the worker left them and flushed and compacted;
   RSS of the worker and the reader;
6. serving: GET of personalized (not fallback) recommendation blocks through the reader, wrk,
   32 connections: requests/s, p50, p99;
7. the heavy-user fold curve (benchmarks.heavy_user: per-event cost at 10 to 20,000 remembered
   event ids);
8. catch-up: the worker stopped, `--backlog` more events produced, the worker started again: how
   long until they are folded, the worker's peak RSS meanwhile, and how many of its `/healthz`
   polls (every 0.5 s, counted from its first answer: start-up and recovery included) failed
   (no answer in 5 s) or took over a second while it caught up, and the slowest answer.

    .venv/bin/python -m benchmarks.scale [--users 1000000] [--items 100000] [--events-per-user 3]
        [--backlog 1000000] [--partitions 8] [--skip-train]

Figures from this shared 2-core machine vary by about +-30 % between runs: compare the engine with
the raw fold of the same run. 10M users is not run here; docs/benchmarks.md projects it from the
measured slopes and says so. Needs `wrk` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import heavy_user, results_file  # noqa: E402
from benchmarks.ingest import catalog_views, raw_baseline  # noqa: E402
from benchmarks.serving import SECRET, compacted_bytes, get, lua_script, processed, rss_kb, wrk  # noqa: E402
from engine.catalog import Product  # noqa: E402
from engine.events import Event, parse  # noqa: E402
from streams.admin import ALL_INPUTS, ensure_topics  # noqa: E402
from streams.broker import EmbeddedBroker, free_port  # noqa: E402
from streams.produce import Producer  # noqa: E402

T0 = 1_767_225_600_000  # 2026-01-01: event times of the load; the backlog follows them
CLUSTER_SECRET = os.environ.get("PERSONA_CLUSTER_SECRET", "bench-" + "c" * 32)
TYPES = ("product_view", "product_view", "add_to_cart", "purchase")
GET_SECONDS = 10
SPAN_MS = 60 * 86_400_000  # event time a load spans; the backlog follows the load


def item(n: int) -> str:
    return f"i{n}"


def products(m: int) -> Iterator[Product]:
    rng = random.Random(3)
    for n in range(m):
        yield Product(
            item_id=item(n), title=f"Product {n} {rng.choice(('mug', 'lamp', 'bag', 'tea', 'card'))}",
            url=f"https://shop.example/p/{n}", image_url=f"https://shop.example/img/{n}.jpg",
            price=round(rng.uniform(1, 200), 2), currency="GBP",
            category=f"c{n % 200}", brand=f"b{n % 500}",
        )  # fmt: skip


def events(
    users: int, per_user: int, items: int, seed: int, first_id: int = 0, t0: int = T0
) -> Iterator[dict[str, Any]]:
    """Each user's events in time order, users interleaved by their start: Zipf-skewed items,
    a user's items mostly from one category block (so co-occurrence has structure)."""
    rng = random.Random(seed)
    cum = _zipf_cdf(items)
    for u in range(users):
        uid = f"u{u}"
        ts = t0 + (u * SPAN_MS) // max(users, 1)  # 60 days of event time over the load
        home = rng.randrange(items)
        for i in range(per_user):
            n = (home + _zipf(rng, cum) * 7) % items if rng.random() < 0.7 else _zipf(rng, cum)
            yield {"event_id": f"{uid}-{first_id + i}", "type": TYPES[min(i, len(TYPES) - 1)] if i else "product_view",
                   "user_id": uid, "ts": ts + i * 60_000, "item_id": item(n), "quantity": 1,
                   "price": 9.5, "currency": "GBP"}  # fmt: skip


def _zipf_cdf(items: int) -> list[float]:
    total, out = 0.0, []
    for rank in range(items):
        total += 1 / (rank + 1)
        out.append(total)
    return [c / total for c in out]


def _zipf(rng: random.Random, cum: list[float]) -> int:
    import bisect

    return min(bisect.bisect_left(cum, rng.random()), len(cum) - 1)


def write_events(path: Path, rows: Iterator[dict[str, Any]]) -> int:
    n = 0
    with gzip.open(path, "wt", compresslevel=1) as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
            n += 1
    return n


def read_back(path: Path) -> Iterator[Event]:
    with gzip.open(path, "rb") as f:
        for line in f:
            yield parse(line)


async def preload(broker: str, partitions: int, path: Path, catalog: int) -> float:
    from persona.cli import import_catalog

    await ensure_topics(broker, partitions, ALL_INPUTS)
    if catalog:
        await import_catalog(broker, partitions, products(catalog))
    started = time.monotonic()
    async with Producer(broker) as producer:
        sent = await producer.send_events(read_back(path))
    return sent / (time.monotonic() - started)


def env_for(partitions: int) -> dict[str, str]:
    return {
        **os.environ,
        "PERSONA_PARTITIONS": str(partitions),
        "PERSONA_API_KEYS": f"bench:{SECRET}:content:read,events:write,models:admin",
        "PERSONA_LOG_LEVEL": "warning",
        "PERSONA_CLUSTER_SECRET": CLUSTER_SECRET,
    }


def start(
    kind: str, broker: str, data: Path, port: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "persona", kind, "--broker", broker, "--host", "127.0.0.1",
           "--port", str(port), "--data-dir", str(data)]  # fmt: skip
    log = (data.parent / f"{kind}.log").open("ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited: see {data.parent / (kind + '.log')}")
        if get(f"http://127.0.0.1:{port}/readyz", 1.0)[0] == 200:
            return proc
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{kind} not ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_rss_of_child(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (kB, from wait4) and the output of one command."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read().decode() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return time.monotonic() - started, usage.ru_maxrss, out


LOAD_PROBE = """
import json, os, resource, sys, time
from pathlib import Path
import numpy as np
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
from models.recs import Recommender
d = Path(sys.argv[1]); before = rss(); t = time.perf_counter()
m = Recommender.load(d)
took = time.perf_counter() - t
recent = [(m.items[i], 0) for i in range(0, len(m.items), max(1, len(m.items) // 30))][:30]
t = time.perf_counter(); n = 200
for _ in range(n): m.recommend(recent, set(), k=20)
per = (time.perf_counter() - t) / n
arrays = sum(a.nbytes for a in np.load(d / "recs.npz", allow_pickle=False).values())
print(json.dumps({"load_s": took, "rss_added_kb": rss() - before, "array_bytes": int(arrays), "recommend_us": per * 1e6}))
"""


def model_load(model_dir: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", LOAD_PROBE, str(model_dir)], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"loading the model failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def activate(broker: str, model_dir: Path, env: dict[str, str], bases: list[str]) -> dict[str, Any]:
    version = json.loads((model_dir / "recs.json").read_text())["version"]
    base_cmd = [sys.executable, "-m", "persona", "models"]
    subprocess.run(
        [*base_cmd, "publish", str(model_dir), "--broker", broker],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*base_cmd, "activate", "recs", version, "--broker", broker],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    started = time.monotonic()
    waited: dict[str, float] = {}
    while len(waited) < len(bases) and time.monotonic() - started < 600:
        for b in bases:
            if (
                b not in waited
                and f'"{version}"' in get(b + "/v1/models")[1].decode(errors="replace")
                and _active(b, version)
            ):
                waited[b] = time.monotonic() - started
        time.sleep(0.5)
    return {"version": version, "seconds_until_serving": waited}


def _active(base: str, version: str) -> bool:
    _s, body = get(base + "/v1/models")
    try:
        return any(m["version"] == version and m["active"] for m in json.loads(body)["models"])
    except (ValueError, KeyError, TypeError):
        return False


def wait_folded(worker: str, target: int, timeout: float, pid: int, peak: list[int]) -> float:
    started = time.monotonic()
    while processed(worker) < target:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not folded within {timeout} s: {processed(worker)} of {target}")
        peak[0] = max(peak[0], rss_kb(pid))
        time.sleep(0.5)
    return time.monotonic() - started


def health_poller(base: str, stop_flag: threading.Event, out: dict[str, float]) -> None:
    """/healthz every 0.5 s, counted from the worker's first answer (before it nothing listens):
    polls, failed (no answer within 5 s), slow (over 1 s), the slowest answer in seconds."""
    answered = False
    while not stop_flag.is_set():
        began = time.monotonic()
        status, _ = get(base + "/healthz", 5.0)
        took = time.monotonic() - began
        answered = answered or status == 200
        if answered:
            out["polls"] += 1
            out["failed"] += status != 200
            out["slow"] += took > 1.0
            out["slowest_s"] = round(max(out["slowest_s"], took), 2)
        time.sleep(0.5)


def personalized_sample(base: str, users: int, want: int) -> tuple[list[str], float]:
    rng = random.Random(5)
    picked, tried = [], 0
    while len(picked) < want and tried < want * 4:
        uid = f"u{rng.randrange(users)}"
        tried += 1
        req = urllib.request.Request(f"{base}/v1/users/{uid}/blocks/recommendations",
                                     headers={"Authorization": f"Bearer {SECRET}"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.headers.get("X-Persona-Fallback") != "1":
                picked.append(uid)
    return picked, len(picked) / max(tried, 1)


def dir_bytes(path: Path, pattern: str) -> int:
    return sum(f.stat().st_size for db in path.glob(pattern) for f in db.rglob("*") if f.is_file())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--events-per-user", type=int, default=3)
    p.add_argument("--backlog", type=int, default=1_000_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--skip-train", action="store_true", help="serve the shipped default model")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        print("bench-scale needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="persona-scale-"))
    data = tmp / "data"
    data.mkdir()
    env = env_for(args.partitions)
    r: dict[str, Any] = {"users": args.users, "items": args.items, "events_per_user": args.events_per_user,
                         "backlog": args.backlog, "partitions": args.partitions, "cpus": os.cpu_count()}  # fmt: skip
    try:
        t = time.monotonic()
        load = tmp / "events.jsonl.gz"
        n_events = write_events(load, events(args.users, args.events_per_user, args.items, seed=1))
        r["data"] = {
            "events": n_events,
            "write_s": time.monotonic() - t,
            "file_bytes": load.stat().st_size,
        }
        print(
            f"data: {n_events:,} events of {args.users:,} users over {args.items:,} items",
            flush=True,
        )
        model_dir = tmp / "model" / "recs"  # train --out DIR writes DIR/recs
        if not args.skip_train:
            secs, peak, _ = peak_rss_of_child(
                [sys.executable, "-m", "persona", "models", "train", "recs", "--events", str(load), "--out", str(tmp / "model")], env)  # fmt: skip
            r["train"] = {"seconds": secs, "peak_rss_mb": peak / 1024}
            r["model_load"] = model_load(model_dir)
            print(
                f"train: {secs:.0f} s, peak {peak / 1024:.0f} MB; load {r['model_load']}",
                flush=True,
            )
        with EmbeddedBroker(log_file=tmp / "broker.log") as broker:
            r["produce_events_per_s"] = asyncio.run(
                preload(broker.url, args.partitions, load, args.items)
            )
            wport, rport = free_port(), free_port()
            worker_base, reader_base = f"http://127.0.0.1:{wport}", f"http://127.0.0.1:{rport}"
            started = time.monotonic()
            worker = start("worker", broker.url, data, wport, env)
            peak = [0]
            folded_s = wait_folded(worker_base, n_events, 7200, worker.pid, peak)
            r["ingest"] = {"events_per_s": n_events / (time.monotonic() - started), "fold_s": folded_s,
                           "worker_peak_rss_mb": peak[0] / 1024}  # fmt: skip
            print(
                f"ingest: {r['ingest']['events_per_s']:,.0f} events/s (incl. start-up)", flush=True
            )
            reader = start("reader", broker.url, data, rport, env)
            rss_before = {
                "worker_mb": rss_kb(worker.pid) / 1024,
                "reader_mb": rss_kb(reader.pid) / 1024,
            }
            if not args.skip_train:
                r["activation"] = activate(broker.url, model_dir, env, [worker_base, reader_base])
                time.sleep(3)
            r["rss"] = {"before_model": rss_before,
                        "after_model": {"worker_mb": rss_kb(worker.pid) / 1024, "reader_mb": rss_kb(reader.pid) / 1024}}  # fmt: skip
            sample, share = personalized_sample(reader_base, args.users, 2000)
            lua = tmp / "get.lua"
            lua_script(lua, "/v1/users/", "/blocks/recommendations", sample, True)
            for uid in sample:  # send time serves cached blocks
                get(f"{reader_base}/v1/users/{uid}/blocks/recommendations")
            r["get"] = {"personalized_share_of_random_users": share, "sample": len(sample),
                        **wrk(reader_base, lua, GET_SECONDS)}  # fmt: skip
            print(f"GET: {r['get']}", flush=True)
            tables = data / "faust" / "v1" / "tables"
            r["disk"] = {
                "profiles_bytes_per_user_as_left": dir_bytes(tables, "profiles-*.db") / args.users
            }
            stop(reader)
            stop(worker)
            r["disk"]["profiles_bytes_per_user_compacted"] = compacted_bytes(tables) / args.users
            backlog_file = tmp / "backlog.jsonl.gz"
            per = args.events_per_user
            backlog_users = max(1, args.backlog // per)
            write_events(
                backlog_file,
                events(
                    backlog_users,
                    per,
                    args.items,
                    seed=2,
                    first_id=per,
                    t0=T0 + SPAN_MS + 86_400_000,
                ),
            )
            asyncio.run(preload(broker.url, args.partitions, backlog_file, 0))
            health: dict[str, float] = {"polls": 0, "failed": 0, "slow": 0, "slowest_s": 0.0}
            flag = threading.Event()
            started = time.monotonic()
            poller = threading.Thread(  # from the first answer on, start-up included
                target=health_poller, args=(worker_base, flag, health), daemon=True
            )
            poller.start()
            worker = start("worker", broker.url, data, wport, env)
            peak = [0]
            wait_folded(worker_base, backlog_users * per, 7200, worker.pid, peak)
            flag.set()
            poller.join()
            r["catch_up"] = {"events": backlog_users * per, "seconds_incl_start": time.monotonic() - started,
                             "worker_peak_rss_mb": peak[0] / 1024, "healthz": health}  # fmt: skip
            stop(worker)
            known = catalog_views(args.items)  # the raw fold knows the catalog the worker has
            r["raw_baseline"] = asyncio.run(raw_baseline(broker.url, n_events, tmp, products=known))
            del known
        r["heavy_user"] = heavy_curve()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(r)
    return 0


def heavy_curve() -> dict[str, float]:
    cases = {}
    for size in heavy_user.SIZES:
        uid = f"user{size}"
        later = [heavy_user._event(uid, size + n) for n in range(1000)]
        cases[size] = (heavy_user._history(uid, size).pack(), later)
    best = {size: float("inf") for size in heavy_user.SIZES}
    for _ in range(3):
        for size, (stored, later) in cases.items():
            best[size] = min(best[size], heavy_user._round(stored, later, 50))
    return {str(size): best[size] / 1000 * 1e6 for size in heavy_user.SIZES}


def report(r: dict[str, Any]) -> None:
    out = results_file.save("scale", r)
    i, raw, g, c = r["ingest"], r["raw_baseline"], r["get"], r["catch_up"]
    print(
        f"\nScale: {r['users']:,} users, {r['items']:,} items, {r['data']['events']:,} events, {r['partitions']} partitions, {r['cpus']} CPUs"
    )
    print(f"ingest, events/s (worker start-up included) | {i['events_per_s']:,.0f}")
    print(
        f"raw aiokafka + rocksdict fold, same topics, events/s | {raw['events_per_s']:,.0f} (ratio {i['events_per_s'] / raw['events_per_s']:.2f})"
    )
    print(f"worker peak RSS while folding, MB | {i['worker_peak_rss_mb']:,.0f}")
    print(
        f"RSS worker / reader, MB (before model, after) | {r['rss']['before_model']} {r['rss']['after_model']}"
    )
    print(
        f"profile state on disk, bytes/user (as left, compacted) | {r['disk']['profiles_bytes_per_user_as_left']:,.0f}, {r['disk']['profiles_bytes_per_user_compacted']:,.0f}"
    )
    print(
        f"GET personalized block, req/s, p50 / p99 ms | {g['rps']:,.0f}, {g['p50_ms']:.2f} / {g['p99_ms']:.2f} ({g['sample']} users, {g['personalized_share_of_random_users']:.0%} of random users personalized)"
    )
    if "train" in r:
        ml = r["model_load"]
        print(
            f"training recs: seconds, peak RSS MB | {r['train']['seconds']:,.0f}, {r['train']['peak_rss_mb']:,.0f}"
        )
        print(
            f"model load: seconds, RSS added MB, array MB, recommend us | {ml['load_s']:.2f}, {ml['rss_added_kb'] / 1024:,.0f}, {ml['array_bytes'] / 2**20:,.0f}, {ml['recommend_us']:,.0f}"
        )
        print(
            f"activation: seconds until each process serves it | {r['activation']['seconds_until_serving']}"
        )
    print(
        f"catch-up after a stop: events, seconds, peak RSS MB | {c['events']:,}, {c['seconds_incl_start']:,.0f}, {c['worker_peak_rss_mb']:,.0f}; /healthz {c['healthz']}"
    )
    print(
        "heavy-user fold, us/event by remembered ids | "
        + ", ".join(f"{k}: {v:.1f}" for k, v in r["heavy_user"].items())
    )
    print(f"raw figures: {out}")


if __name__ == "__main__":
    sys.exit(main())
