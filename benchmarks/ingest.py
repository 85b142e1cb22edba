"""Ingestion benchmark: REES46 clickstream (looped) through the embedded broker into one worker.

Prints, from one run on this machine:
- throughput: events/s one worker process folds into RocksDB profiles, the topics pre-loaded
  (consumption only, no producer competing for the cores);
- the raw baseline: a plain aiokafka consumer + rocksdict doing the same fold and one write per
  user per batch, on the same topics — the ratio shows what Faust costs;
- freshness: event sent -> profile updated (seen over HTTP), p50/p99, while events stream in at
  half the measured throughput.

Usage: python -m benchmarks.ingest [--events 100000] [--partitions 4] [--seconds 20]
    [--load rees46|synthetic] [--items 5000] [--catalog] [--repeat 1]
With `--repeat N` the throughput part (a new broker, pre-load, worker, raw fold) runs N times and
each round's ratios are printed with their medians (one round's ratio is one draw on a machine
whose speed moves 10-20 % between runs).
Needs ../shared/data/rees46_oct2019_head (REES46: internal benchmarks only, never redistributed).
`--load synthetic` pre-loads `benchmarks.scale`'s users instead (3 events each, the third an
add_to_cart, over `--items` Zipf-skewed products; `--events` / 3 users): a catalog-wide load in
which every user is new to the fold and a third of the events change an item's popularity, where
REES46's looped sample is mostly views by users seen many times. The freshness phase stays on
REES46. With `--catalog` those products are imported as the catalog first (`persona catalog
import`'s path) and a worker applies it on the data directory the measured worker then starts
on: the fold looks up known products (a shop's steady state) instead of unknown ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REES46 = ROOT.parent / "shared" / "data" / "rees46_oct2019_head" / "2019-Oct_head.csv.gz"
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer  # noqa: E402
from rocksdict import Rdict  # noqa: E402

from benchmarks import results_file  # noqa: E402
from engine.catalog import Product  # noqa: E402
from engine.events import Event, parse, validate  # noqa: E402
from engine.profile import Profile, apply  # noqa: E402
from engine.sources import read_events  # noqa: E402
from streams.admin import ALL_INPUTS, ensure_topics  # noqa: E402
from streams.broker import EmbeddedBroker, free_port  # noqa: E402
from streams.kafka_security import as_config  # noqa: E402
from streams.produce import Producer  # noqa: E402

WARMUP_S = 12.0  # seconds of live load before the freshness probes start
POLL = 0.25  # seconds between samples of the worker's event counter
SPAN_MS = 4 * 3_600_000  # each loop of the sample is shifted by this much event time


def looped(n: int) -> Iterator[Event]:
    base = list(read_events(REES46))
    loop = 0
    sent = 0
    while True:
        for e in base:
            if sent >= n:
                return
            yield replace(e, event_id=f"{e.event_id}-{loop}", ts=e.ts + loop * SPAN_MS)
            sent += 1
        loop += 1


def loop_lag(base: str) -> dict[str, float]:
    """The worker's event-loop lag histogram: cumulative counts by upper bound ('+Inf' = all)."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("persona_event_loop_lag_seconds_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[le] = float(line.rsplit(" ", 1)[1])
    return out


def lag_during(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Probes (one per 50 ms) of a phase, and how many fired more than 0.1 / 0.25 s late."""

    def d(le: str) -> float:
        return after.get(le, 0.0) - before.get(le, 0.0)

    total = d("+Inf")
    return {
        "probes": total,
        "late_over_0.1s": total - d("0.1"),
        "late_over_0.25s": total - d("0.25"),
    }


def metric(base: str, name: str) -> float:
    return metrics(base, name)[0]


def metrics(base: str, *names: str) -> list[float]:
    """The values of unlabelled metrics `names` from one /metrics page (0.0 where absent)."""
    found = dict.fromkeys(names, 0.0)
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name in found:
                found[name] = float(value.split()[0])
    return list(found.values())


def start_worker(broker: str, data: Path, partitions: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(
        os.environ,
        PERSONA_PARTITIONS=str(partitions),
        PERSONA_API_KEYS="bench:bench-kkkkkkkkkkkkkkkkkk:content:read,events:write",
        PERSONA_READERS="0",
        # on a broker URL every process signs with the cluster secret (engine/signing.py)
        PERSONA_CLUSTER_SECRET=os.environ.get("PERSONA_CLUSTER_SECRET", "bench-" + "c" * 32),
    )
    with (data / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "persona",
                "worker",
                "--broker",
                broker,
                "--port",
                str(port),
                "--data-dir",
                str(data),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("worker not ready")


def stop_worker(proc: subprocess.Popen[bytes], log: Path, wait: float = 20.0) -> None:
    """SIGTERM the measured worker and wait for it. One that has not stopped within `wait`
    seconds is killed, its log kept under benchmarks/results/ (the data directory is removed
    afterwards) and the run fails saying where: a slow stop is a finding, not noise."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        results_file.RESULTS.mkdir(parents=True, exist_ok=True)
        kept = results_file.RESULTS / f"worker-stop-{time.strftime('%Y%m%d-%H%M%S')}.log"
        shutil.copy(log, kept)
        raise RuntimeError(
            f"the worker did not stop within {wait:g} s of SIGTERM; log: {kept}"
        ) from None


def with_catalog(broker: str, data: Path, partitions: int, items: int) -> float:
    """Import `benchmarks.scale`'s catalog of `items` products and let a worker on `data` apply
    it, then stop that worker: the measured worker starts on the same data with the catalog in
    place (a shop's steady state), not applying it while it folds. Seconds the worker took."""
    from benchmarks.scale import products
    from persona.cli import import_catalog

    async def produce() -> None:
        await ensure_topics(broker, partitions, ALL_INPUTS)
        await import_catalog(broker, partitions, products(items))

    asyncio.run(produce())
    started = time.monotonic()
    proc, base = start_worker(broker, data, partitions)
    try:
        while metric(base, "persona_catalog_updates_total") < items:
            if time.monotonic() - started > 600:
                raise RuntimeError("the worker did not apply the catalog within 10 minutes")
            time.sleep(POLL)
        return time.monotonic() - started
    finally:
        stop_worker(proc, data / "worker.log", wait=60)


def catalog_views(items: int) -> dict[str, Product]:
    """`with_catalog`'s products as the raw fold keeps them: item id -> the fold's view
    (`Product.fold_view`: what `engine.profile.apply` reads), built before the raw fold starts."""
    from benchmarks.scale import products

    return {p.item_id: p.fold_view() for p in products(items)}


def synthetic(n: int, items: int) -> Iterator[Event]:
    """`n` events of `benchmarks.scale`'s synthetic users (3 each)."""
    from benchmarks.scale import events

    for row in islice(events(-(-n // 3), 3, items, seed=1), n):
        yield validate(row)


async def preload(broker: str, partitions: int, n: int, load: Iterator[Event]) -> float:
    await ensure_topics(broker, partitions, ALL_INPUTS)
    started = time.monotonic()
    async with Producer(broker) as producer:
        await producer.send_events(load)
    return n / (time.monotonic() - started)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_worker(base: str, n: int, pids: dict[str, int]) -> dict[str, Any]:
    """Events/s of the worker, and the share of one core each process in `pids` used meanwhile
    (a Python process can use about one core: the GIL).

    The counter is sampled every POLL seconds (a /metrics page costs the worker about a
    millisecond: sampling every 50 ms took ~2% of its time); the rate is taken between the first
    sample with events folded and the last sample before all `n` were, both while it folds."""
    name = "persona_events_processed_total"
    first: tuple[float, float, dict[str, float], float] | None = None
    last: tuple[float, float, dict[str, float], float] | None = None
    while True:
        v, folded_batches = metrics(base, name, "persona_fold_batches_total")
        now = time.monotonic()
        if v >= n and first is not None and last is not None and last[0] > first[0]:
            seconds = last[0] - first[0]
            batches = last[3] - first[3]
            return {
                "events": last[1] - first[1],
                "seconds": seconds,
                "events_per_s": (last[1] - first[1]) / seconds,
                "cpu_cores": {k: (last[2][k] - first[2][k]) / seconds for k in pids},
                "records_per_batch": (last[1] - first[1]) / max(batches, 1),
            }
        if v >= n:
            raise RuntimeError("the worker folded every event within one sample: use more --events")
        if v > 0:
            cpu = {k: cpu_seconds(pid) for k, pid in pids.items()}
            sample = (now, v, cpu, folded_batches)
            if first is None:
                first = sample
            elif v < n:
                last = sample
        time.sleep(POLL)


SAMPLER = """
import sys, time, json
from benchmarks.ingest import metrics, cpu_seconds
base, pid, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "w") as out:
    while True:
        v, batches = metrics(base, "persona_events_processed_total", "persona_fold_batches_total")
        out.write(json.dumps([time.monotonic(), v, cpu_seconds(pid), batches]) + "\\n")
        out.flush()
        time.sleep(%r)
"""


def start_sampler(base: str, pid: int, path: Path) -> subprocess.Popen[bytes]:
    """A process sampling the worker's event counter and CPU seconds every POLL seconds into
    `path` (JSON lines: monotonic time, events, CPU seconds, batches): in its own process, so
    that sampling takes nothing from a raw fold running in this one (`--together`)."""
    return subprocess.Popen(
        [sys.executable, "-c", SAMPLER % POLL, base, str(pid), str(path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


def worker_between(path: Path, start: float, end: float, n: int) -> dict[str, Any]:
    """The worker's events/s and cores between monotonic times `start` and `end` (the raw
    fold's run), from `start_sampler`'s samples: the first taken at or after `start` and the
    last at or before `end`. RuntimeError when the worker was not folding all along (it had
    folded every one of the `n` events, or none, inside the window)."""
    samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        raise RuntimeError("too few samples of the worker during the raw fold: use more --events")
    (t0, v0, c0, b0), (t1, v1, c1, b1) = inside[0], inside[-1]
    if v0 <= 0 or v1 >= n:
        raise RuntimeError(
            "the worker was not folding during the whole raw fold: use more --events"
        )
    seconds = t1 - t0
    return {
        "events": v1 - v0,
        "seconds": seconds,
        "events_per_s": (v1 - v0) / seconds,
        "cpu_cores": {"worker": (c1 - c0) / seconds},
        "records_per_batch": (v1 - v0) / max(b1 - b0, 1),
    }


def busy_core_rates(worker: dict[str, Any], raw: dict[str, Any]) -> tuple[float, float]:
    """Events per CPU-second of the worker and of the raw fold: on a shared machine each got
    whatever share of a core it could, so their ratio is steadier than the events/s one (the
    same work per event whatever the share)."""
    w_core = worker["events_per_s"] / max(worker["cpu_cores"]["worker"], 1e-9)
    r_core = raw["events_per_s"] / max(raw["cpu_cores"], 1e-9)
    return w_core, r_core


def per_core(worker: dict[str, Any], raw: dict[str, Any]) -> str:
    """`busy_core_rates` and their ratio, as printed."""
    w_core, r_core = busy_core_rates(worker, raw)
    return (
        f"per busy core: worker {w_core:,.0f} events/s, raw {r_core:,.0f} events/s "
        f"(raw used {raw['cpu_cores']:.2f} cores), ratio {w_core / r_core:.2f}"
    )


def read_again(base: str) -> dict[str, float]:
    """Records the worker read from the broker outside Faust's delivery (the position audit's
    catch-up) and Faust's copies of them it dropped as already folded: a backlog folded once
    reads none twice (issue 21 item 5; 46,000-75,000 of 150,000 records before)."""
    return {
        "gap_read": metric(base, "persona_events_gap_read_total"),
        "redelivered": metric(base, "persona_events_redelivered_total"),
    }


async def raw_baseline(
    broker: str,
    n: int,
    data: Path,
    group: str = "raw-baseline",
    products: Mapping[str, Product] | None = None,
    progress: Path | None = None,
) -> dict[str, float]:
    """aiokafka + rocksdict, the same pure fold, one write per user per batch (a new consumer
    `group` and a new database each run: it reads the topics from their start). With `products`
    (a catalog the worker has too) each event's product comes from that dict, as a plain app
    would keep its catalog in memory: the fold then does the worker's category and brand work.
    With `progress`, a line `events folded, time.monotonic()` is appended to that file after each
    batch is written (`--alternate` reads it)."""
    db = Rdict(str(data / f"{group}.db"))
    log = None if progress is None else progress.open("a", buffering=1)
    consumer = AIOKafkaConsumer(
        "clickstream",
        "cart",
        "social",
        **as_config(broker).aiokafka(),  # the clients' one configuration (plaintext here)
        auto_offset_reset="earliest",
        group_id=group,
        enable_auto_commit=True,
        max_poll_records=2000,
    )
    await consumer.start()
    done = 0
    folds = 0  # batches folded (getmany calls that returned records)
    started = None
    cpu_started = 0.0
    try:
        while done < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            folds += bool(batches)
            touched: dict[bytes, Profile] = {}
            for messages in batches.values():
                for m in messages:
                    event = parse(m.value)
                    key = event.user_id.encode()
                    current = touched.get(key)
                    if current is None:
                        raw = db.get(key)
                        current = None if raw is None else Profile.unpack(raw)
                    item = event.item_id
                    product = products.get(item) if products is not None and item else None
                    touched[key] = apply(current, event, product)
                    done += 1
            if started is None and done:
                started, cpu_started = time.monotonic(), time.process_time()
            for key, profile in touched.items():
                db[key] = profile.pack()
            if log is not None and batches:
                log.write(f"{done} {time.monotonic()}\n")
    finally:
        await consumer.stop()
        db.close()
        if log is not None:
            log.close()
    ended = time.monotonic()
    elapsed = ended - (started or ended)
    cores = (time.process_time() - cpu_started) / max(elapsed, 1e-9) if started else 0.0
    return {
        "from": started or ended,  # time.monotonic() of the first batch folded, and of the end
        "to": ended,
        "events": done,
        "seconds": elapsed,
        "events_per_s": done / max(elapsed, 1e-9),
        "cpu_cores": cores,  # this process's CPU meanwhile (the fold runs here)
        "records_per_batch": done / max(folds, 1),
    }


def live_ts(origin_ms: int, started: float) -> int:
    """An event time of the freshness phase: the pre-loaded events' newest, moving on with the
    wall clock from the phase's start. Stamped with the wall clock itself, the live events moved
    event time months past the loaded users' at once: the next trigger sweep found them all quiet
    and sent a churn check for each one whose score crossed, and the probes that ran into it
    waited behind it (p50 312-344 ms in three of five runs on the synthetic load, 2026-12-06)."""
    return origin_ms + int((time.time() - started) * 1000)


async def _steady_load(
    broker: str, rate: float, newest: Any, stop: Any, origin_ms: int, started: float
) -> None:
    async with Producer(broker) as producer:
        events = looped(10**9)
        t0 = time.monotonic()
        sent = 0
        batch: list[Event] = []
        for e in events:
            if stop.is_set():
                return
            # event time moving with the wall clock (`live_ts`), as a shop's live events' does:
            # the looped sample's own times advance 4 h of event time per loop (every few
            # seconds here), which ran the hourly (event-time) trigger sweep every 10 s
            live = replace(e, event_id=f"live-{e.event_id}", ts=live_ts(origin_ms, started))
            newest.value = max(newest.value, live.ts)
            batch.append(live)
            if len(batch) >= 50:
                await producer.send_events(batch)
                sent += len(batch)
                batch = []
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)


def steady_load(
    broker: str, rate: float, newest: Any, stop: Any, origin_ms: int, started: float
) -> None:
    """The background load, in a process of its own: sharing the probes' event loop, producing
    thousands of events a second delayed the probes' own sends and polls by up to tens of ms."""
    asyncio.run(_steady_load(broker, rate, newest, stop, origin_ms, started))


async def freshness(
    broker: str, base: str, rate: float, seconds: float, origin_ms: int
) -> dict[str, Any]:
    """Background load at `rate` events/s; probes: one event for a probe user, poll its profile.
    Event times start at `origin_ms` (the pre-loaded events' newest) and move with the wall clock
    (`live_ts`)."""
    import multiprocessing

    import aiohttp

    latencies: list[float] = []
    timeouts = [0]
    mp = multiprocessing.get_context("spawn")
    # event time of the newest live event sent (0 until the load process has started)
    newest = mp.Value("q", 0)
    stop = mp.Event()
    started = time.time()
    loader = mp.Process(
        target=steady_load, args=(broker, rate, newest, stop, origin_ms, started), daemon=True
    )

    async def probes() -> None:
        headers = {"Authorization": "Bearer bench-kkkkkkkkkkkkkkkkkk"}
        async with Producer(broker) as producer, aiohttp.ClientSession() as http:
            i = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                i += 1
                user = f"probe-{i % 50}"
                url = f"{base}/v1/users/{user}/profile"
                async with http.get(url, headers=headers) as r:
                    before = (await r.json())["version"] if r.status == 200 else 0
                event = Event(f"probe-{i}", "page_view", user, live_ts(origin_ms, started))
                sent = time.monotonic()
                await producer.send_events([event])
                while time.monotonic() - sent < 30:
                    async with http.get(url, headers=headers) as r:
                        if r.status == 200 and (await r.json())["version"] > before:
                            latencies.append(time.monotonic() - sent)
                            break
                    await asyncio.sleep(0.002)
                else:
                    timeouts[0] += 1
                await asyncio.sleep(0.05)

    loader.start()
    try:
        while not newest.value:
            if not loader.is_alive():
                raise RuntimeError("the load process exited")
            await asyncio.sleep(0.01)
        await asyncio.sleep(WARMUP_S)
        await probes()
    finally:
        stop.set()
        loader.join(30)
        if loader.is_alive():
            loader.kill()
    latencies.sort()
    # "inclusive": within the probes' range (the default, "exclusive", extrapolates past the
    # slowest probe: a p99 above the max with a dozen probes)
    q = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) > 2
        else [float("nan")] * 99
    )
    return {
        "probes": len(latencies),
        "timeouts": timeouts[0],
        "rate": rate,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


def one_round(args: argparse.Namespace, catalog: int, freshness_phase: bool) -> dict[str, Any]:
    """One measurement on a new embedded broker and new data: pre-load the topics, fold them with
    a worker (then, with `freshness_phase`, the freshness phase), stop it, fold them again with
    the raw baseline."""
    out: dict[str, Any] = {}
    events = synthetic(args.events, args.items) if args.load == "synthetic" else looped(args.events)
    newest = [0]  # the pre-loaded events' newest event time: the freshness phase goes on from it

    def load() -> Iterator[Event]:
        for event in events:
            newest[0] = max(newest[0], event.ts)
            yield event

    tmp = Path(tempfile.mkdtemp(prefix="persona-bench-"))
    try:
        with EmbeddedBroker(log_file=tmp / "broker.log") as broker:
            (tmp / "w").mkdir()
            if catalog:
                out["catalog_seconds"] = with_catalog(
                    broker.url, tmp / "w", args.partitions, catalog
                )
            out["produce_events_per_s"] = asyncio.run(
                preload(broker.url, args.partitions, args.events, load())
            )
            proc, base = start_worker(broker.url, tmp / "w", args.partitions)
            known = None if not catalog or args.raw_unknown_products else catalog_views(catalog)
            try:
                assert broker.proc is not None
                pids = {"worker": proc.pid, "broker": broker.proc.pid}
                if args.together or args.alternate:
                    if args.together:
                        out["worker"], out["raw_baseline"] = together(
                            broker.url, base, proc.pid, args.events, tmp, known
                        )
                    else:
                        out["worker"], out["raw_baseline"] = alternate(
                            broker.url,
                            base,
                            proc.pid,
                            args.events,
                            tmp,
                            len(known or ()),
                            slice_s=args.turn_seconds,
                            broker_pid=broker.proc.pid,
                        )
                    while metric(base, "persona_events_processed_total") < args.events:
                        time.sleep(POLL)  # the freshness phase starts on a folded backlog
                else:
                    out["worker"] = measure_worker(base, args.events, pids)
                out["worker"]["read_again"] = read_again(base)
                if freshness_phase:
                    rate = args.freshness_rate or out["worker"]["events_per_s"] / 2
                    lag_before = loop_lag(base)
                    out["freshness"] = asyncio.run(
                        freshness(broker.url, base, rate, args.seconds, newest[0] + 1)
                    )
                    out["freshness"]["loop_lag"] = lag_during(lag_before, loop_lag(base))
            finally:
                stop_worker(proc, tmp / "w" / "worker.log")
            if not (args.together or args.alternate):
                out["raw_baseline"] = asyncio.run(
                    raw_baseline(broker.url, args.events, tmp, products=known)
                )
            elif args.alternate:  # the raw fold once more, alone and without turns: a check
                out["raw_alone"] = asyncio.run(
                    raw_baseline(broker.url, args.events, tmp, "raw-alone", products=known)
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def together(
    broker: str,
    base: str,
    pid: int,
    n: int,
    tmp: Path,
    products: Mapping[str, Product] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--together`: the raw fold runs while the worker folds the same topics (each has a core
    of the two), and the worker's rate is taken over the raw fold's run. Both then fold through
    the same phase of a shared machine, whose speed moved the raw fold 15-30 % between rounds
    run one after the other (2026-12-06: 14,915-28,599 events/s)."""
    samples = tmp / "worker-samples.jsonl"
    sampler = start_sampler(base, pid, samples)
    try:
        while metric(base, "persona_events_processed_total") <= 0:
            time.sleep(0.05)  # the worker folds first: its window then lies inside the raw's
        raw = asyncio.run(raw_baseline(broker, n, tmp, products=products))
    finally:
        sampler.terminate()
        sampler.wait(10)
    worker = worker_between(samples, raw["from"], raw["to"], n)
    return worker, raw


RAW_RUNNER = """
import asyncio, json, sys
from pathlib import Path
from benchmarks.ingest import catalog_views, raw_baseline
broker, n, tmp, progress, items = sys.argv[1:6]
tmp, progress = Path(tmp), Path(progress)
known = catalog_views(int(items)) if int(items) else None
out = asyncio.run(raw_baseline(broker, int(n), tmp, products=known, progress=progress))
(tmp / "raw-result.json").write_text(json.dumps(out))
"""
SLICE_S = 1.5  # seconds each process runs while the other is stopped (`--alternate`)


def _progress(path: Path) -> list[tuple[float, float]]:
    """The raw runner's progress lines: (events folded, monotonic time)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            rows.append((float(parts[0]), float(parts[1])))
    return rows


def alternate(
    broker: str,
    base: str,
    pid: int,
    n: int,
    tmp: Path,
    items: int,
    slice_s: float = SLICE_S,
    broker_pid: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--alternate`: the worker and a raw fold in its own process take turns of `slice_s`
    seconds (the other one SIGSTOPped), until either has folded nearly all `n` events. Each one's
    rate is its events over its own turns' seconds: both fold alone on the machine, as when run
    one after the other, and the machine's slow and fast phases (which moved sequential rounds
    of one commit between 0.49 and 0.89, 2026-12-06) fall on both. The worker's turn is measured
    from its counter read after SIGCONT to the one read before SIGSTOP; the raw fold's from its
    first to its last batch written inside the turn."""
    progress = tmp / "raw-progress.txt"
    os.kill(pid, signal.SIGSTOP)  # the raw fold joins its group while the worker waits
    raw_proc = subprocess.Popen(
        [sys.executable, "-c", RAW_RUNNER, broker, str(n), str(tmp), str(progress), str(items)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    w_events = w_seconds = w_cpu = r_events = r_seconds = r_cpu = r_turns = 0.0
    b_worker = b_raw = 0.0  # the broker's CPU seconds during each one's turns
    turns = 0

    def broker_cpu() -> float:
        return 0.0 if broker_pid is None else cpu_seconds(broker_pid)

    try:
        deadline = time.monotonic() + 300
        while not _progress(progress):  # its first batch: the raw fold is under way
            if raw_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the raw fold did not start")
            time.sleep(0.05)
        os.kill(raw_proc.pid, signal.SIGSTOP)
        while True:
            bc0 = broker_cpu()
            os.kill(pid, signal.SIGCONT)
            v0, c0 = metric(base, "persona_events_processed_total"), cpu_seconds(pid)
            t0 = time.monotonic()
            time.sleep(slice_s)
            v1, c1 = metric(base, "persona_events_processed_total"), cpu_seconds(pid)
            t1 = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            bc1 = broker_cpu()
            w_events, w_seconds, w_cpu = w_events + v1 - v0, w_seconds + t1 - t0, w_cpu + c1 - c0
            seen, rc0, rt0 = len(_progress(progress)), cpu_seconds(raw_proc.pid), time.monotonic()
            os.kill(raw_proc.pid, signal.SIGCONT)
            time.sleep(slice_s)
            os.kill(raw_proc.pid, signal.SIGSTOP)
            b_worker, b_raw = b_worker + bc1 - bc0, b_raw + broker_cpu() - bc1
            r_cpu += cpu_seconds(raw_proc.pid) - rc0
            r_turns += time.monotonic() - rt0
            inside = _progress(progress)[seen:]
            if len(inside) >= 2:
                r_events += inside[-1][0] - inside[0][0]
                r_seconds += inside[-1][1] - inside[0][1]
            turns += 1
            done = inside[-1][0] if inside else 0.0
            if v1 >= 0.9 * n or done >= 0.9 * n:
                break
    finally:
        for target in (pid, raw_proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGCONT)
        raw_proc.kill()
        raw_proc.wait(30)
    if not w_seconds or not r_seconds:
        raise RuntimeError("no turn measured: use more --events")
    worker = {
        "events": w_events,
        "seconds": w_seconds,
        "events_per_s": w_events / w_seconds,
        "cpu_cores": {"worker": w_cpu / w_seconds},
        "records_per_batch": float("nan"),
        "turns": turns,
        "broker_cores": b_worker / w_seconds,  # the broker's CPU during the worker's turns
    }
    raw = {
        "events": r_events,
        "seconds": r_seconds,
        "events_per_s": r_events / r_seconds,
        "cpu_cores": r_cpu / r_turns,  # over its whole turns
        "records_per_batch": float("nan"),
        "turns": turns,
        "broker_cores": b_raw / r_turns,  # ... and during the raw fold's
    }
    return worker, raw


def rounds_summary(rounds: list[dict[str, Any]]) -> list[str]:
    """One line per round (events/s and per-busy-core ratios of worker to raw fold) and their
    medians: the machine's speed moves 10-20 % between runs, for the raw fold as for the worker,
    so one round's ratio is one draw."""
    lines, ratios, core_ratios = [], [], []
    for n, r in enumerate(rounds, 1):
        w, raw = r["worker"], r["raw_baseline"]
        ratio = w["events_per_s"] / raw["events_per_s"]
        w_core, r_core = busy_core_rates(w, raw)
        ratios.append(ratio)
        core_ratios.append(w_core / r_core)
        alone = r.get("raw_alone")
        lines.append(
            f"round {n}: worker {w['events_per_s']:,.0f} events/s ({w['cpu_cores']['worker']:.2f} "
            f"cores), raw {raw['events_per_s']:,.0f} events/s, ratio {ratio:.2f}, "
            f"per busy core {w_core / r_core:.2f}"
            + (
                ""
                if alone is None
                else f"; raw alone after {alone['events_per_s']:,.0f}, ratio to it "
                f"{w['events_per_s'] / alone['events_per_s']:.2f}"
            )
        )
    lines.append(
        f"median of {len(rounds)} rounds: ratio {statistics.median(ratios):.2f}, per busy core "
        f"{statistics.median(core_ratios):.2f} (range {min(core_ratios):.2f}-"
        f"{max(core_ratios):.2f})"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--load", choices=("rees46", "synthetic"), default="rees46")
    parser.add_argument("--items", type=int, default=5000, help="products of the synthetic load")
    parser.add_argument(
        "--catalog",
        action="store_true",
        help="synthetic load: import its items as a catalog first (else every item is unknown)",
    )
    parser.add_argument(
        "--raw-unknown-products",
        action="store_true",
        help="with --catalog, the raw fold folds without products (before 2026-12-05's sixth "
        "session it always did: no category or brand work, which the worker does)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="freshness phase length")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure worker and raw fold this many times, each on a new broker (the freshness "
        "phase runs in the first); prints each round and the medians",
    )
    parser.add_argument(
        "--together",
        action="store_true",
        help="run the raw fold while the worker folds (each on a core) and compare their rates "
        "over the same seconds: the machine's phase then moves both",
    )
    parser.add_argument(
        "--alternate",
        action="store_true",
        help=f"the worker and the raw fold (in its own process) take turns of {SLICE_S:g} s, "
        "the other stopped, and each one's rate is taken over its own turns: both fold alone, "
        "through the same phases of a shared machine",
    )
    parser.add_argument(
        "--turn-seconds",
        type=float,
        default=SLICE_S,
        help="with --alternate, the seconds of each turn",
    )
    parser.add_argument(
        "--freshness-rate", type=float, help="events/s during the freshness phase (default: half)"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1 (got {args.repeat})")
    if args.together and args.alternate:
        parser.error("--together and --alternate are two ways of measuring: choose one")
    if not REES46.exists():
        sys.exit(f"needs {REES46} (the REES46 sample in ../shared/data)")
    results: dict[str, Any] = {
        "events": args.events,
        "partitions": args.partitions,
        "load": args.load,
        "items": args.items if args.load == "synthetic" else None,
        "catalog": args.catalog and args.load == "synthetic",
    }
    catalog = args.items if results["catalog"] else 0
    rounds = [one_round(args, catalog, freshness_phase=n == 0) for n in range(args.repeat)]
    results.update(rounds[0])  # the first round's figures, as a run of one round gives them
    if args.repeat > 1:
        results["rounds"] = [
            {k: r[k] for k in ("worker", "raw_baseline", "raw_alone") if k in r} for r in rounds
        ]
    w, raw, f = results["worker"], results["raw_baseline"], results["freshness"]
    described = (
        f"synthetic events ({-(-args.events // 3):,} users, {args.items:,} items"
        f"{', in the catalog' if catalog else ', none in the catalog'})"
        if args.load == "synthetic"
        else "REES46 events (looped)"
    )
    print(
        f"\nIngestion, {args.events:,} {described}, {args.partitions} partitions, "
        f"embedded broker, {os.cpu_count()} cores"
    )
    if "catalog_seconds" in results:
        print(
            f"catalog: {args.items:,} products applied by a worker in "
            f"{results['catalog_seconds']:.0f} s before the measured worker started on its data"
        )
    print(f"{'':34}{'events/s':>12}")
    print(f"{'producer (aiokafka, msgpack)':34}{results['produce_events_per_s']:>12,.0f}")
    print(f"{'Persona worker (Faust + RocksDB)':34}{w['events_per_s']:>12,.0f}")
    print(f"{'raw baseline (aiokafka + rocksdict)':34}{raw['events_per_s']:>12,.0f}")
    print(f"{'ratio worker / raw':34}{w['events_per_s'] / raw['events_per_s']:>12.2f}")
    cores = ", ".join(f"{k} {v:.2f}" for k, v in w["cpu_cores"].items())
    print(f"CPU while the worker consumed, in cores: {cores} (of {os.cpu_count()})")
    print(per_core(w, raw))
    print(
        f"records per fold batch: worker {w['records_per_batch']:,.0f}, "
        f"raw {raw['records_per_batch']:,.0f}"
    )
    if "raw_alone" in results:
        alone = results["raw_alone"]
        print(
            f"the raw fold again, alone after the turns: {alone['events_per_s']:,.0f} events/s "
            f"({alone['cpu_cores']:.2f} cores); worker / it: "
            f"{w['events_per_s'] / alone['events_per_s']:.2f}"
        )
    if "broker_cores" in w:
        print(
            f"broker CPU in cores during the turns: the worker's {w['broker_cores']:.2f}, "
            f"the raw fold's {raw['broker_cores']:.2f}"
        )
    if args.repeat > 1:
        print(*rounds_summary(rounds), sep="\n")
    again = w["read_again"]
    print(
        f"read outside Faust's delivery (position audit): {again['gap_read']:,.0f} records, "
        f"{again['redelivered']:,.0f} delivered again and dropped"
    )
    print(
        f"freshness at {f['rate']:,.0f} events/s: p50 {f['p50_ms']:.1f} ms, "
        f"p99 {f['p99_ms']:.1f} ms, max {f['max_ms']:.1f} ms over {f['probes']} probes "
        f"({f['timeouts']} timed out)"
    )
    lag = f["loop_lag"]
    print(
        f"worker event loop meanwhile: {lag['late_over_0.1s']:.0f} of {lag['probes']:.0f} "
        f"50 ms timers fired > 0.1 s late, {lag['late_over_0.25s']:.0f} > 0.25 s late"
    )
    out = results_file.save("ingest", results)
    print(f"raw figures: {out}")


if __name__ == "__main__":
    main()
