# ruff: noqa: E501  (the report table and the embedded baseline app read better unwrapped)
"""Send-time serving benchmark (`make bench`): the real engine beside a raw baseline.

Starts the embedded broker and `persona run` (worker on a private port + PERSONA_READERS readers on
the public port), loads the demo catalog (persona/demo/catalog.jsonl.gz) and USERS synthetic
shoppers (product views, carts and purchases of real catalog items, Zipf-skewed), then measures:

- ingest: events/s the worker folds (bulk load);
- GET one block with wrk (32 connections, random users): engine vs a bare aiohttp app reading the
  same profile bytes from the same RocksDB files (its own secondaries, max_open_files -1 and one
  file-opening thread, caught up with the worker every 150 ms on its event loop, so it serves
  fresh values too) — idle (once the worker is done flushing and compacting after the load:
  under a quarter of a core over a second, at most 120 s; engine and baseline taking turns,
  BENCH_GET_ROUNDS rounds each, means reported), then while events stream in at half the
  measured ingest rate (or BENCH_STREAM_RATE events/s): one producer process streams throughout
  while engine and baseline take turns in the same way (reporting the ingest rate reached during
  each round); every round records the CPU (a share of one core) of the reader(s), the worker,
  the broker, the bare app, the producer and wrk, and the reader's renders and catch-ups;
  while events stream in, the ingestion side (worker, broker, producer) and the serving side
  (reader or bare app, and wrk) run on CPUs of their own (BENCH_PIN, see there);
  BENCH_PROFILE=<file> adds one more engine round while events stream in, sampled by py-spy
  (`--native`, raw collapsed stacks written to that file; not in the figures);
- batch: blocks/s of POST /v1/blocks:batch (1000 users, msgpack, cached blocks) vs the bare app
  returning the 1000 raw profiles as msgpack;
- render: messages/s of POST /v1/render with a 3-block template (vs the bare batch);
- memory: bytes of profile state per user on disk (as the worker left it, of which write-ahead
  log; and flushed and compacted once the worker stopped), packed profile size, RSS of worker
  and reader.

Prints a table and writes benchmarks/results/serving-<time>.json. Needs `wrk` on PATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import results_file  # noqa: E402
from engine.events import validate  # noqa: E402
from engine.settings import parse_cpus  # noqa: E402
from engine.sources import read_catalog  # noqa: E402
from persona.runtime import place  # noqa: E402
from streams.broker import EmbeddedBroker, free_port  # noqa: E402

USERS = int(os.environ.get("BENCH_USERS", "100000"))
PARTITIONS = 4
SECRET = "bench-secret-kkkkkkkkkkk"
WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
GET_ROUNDS = int(os.environ.get("BENCH_GET_ROUNDS", "2"))
PROFILE = os.environ.get("BENCH_PROFILE", "")
STREAM_TIME = os.environ.get("BENCH_STREAM_TIME", "live")  # or "replay" (see stream_events)
# events/s offered while streaming; default: half the bulk ingest rate measured in the same run
# (which varies with the machine's load: a fixed rate compares runs)
STREAM_RATE = float(os.environ.get("BENCH_STREAM_RATE", "0"))
# wrk shares the two cores with the worker and the broker, and a response that wakes one of its
# threads can wait out their whole CPU slice (~1.4 ms here) before wrk reads it and takes the
# time: latency of the load generator, not of the server (a sender's client runs elsewhere).
# Measured with a stand-in server beside two CPU hogs, 2 runs each: wrk's p99 5.98-6.71 ms with
# the default slice, 4.50-4.74 ms with 0.1 ms slices, at the same req/s. So wrk runs with 0.1 ms
# slices (EEVDF custom slice, Linux 6.12+; its CPU share is unchanged), for the engine's and the
# baseline's rounds alike; BENCH_WRK_SLICE=0 keeps the default.
WRK_SLICE = float(os.environ.get("BENCH_WRK_SLICE", "0.0001"))
_SLICED_EXEC = (
    f"import os, sys; sys.path.insert(0, {str(ROOT)!r}); from persona.runtime import "
    "request_slice; request_slice(float(sys.argv[1])); os.execvp(sys.argv[2], sys.argv[2:])"
)
# BENCH_PIN="<cpus>/<cpus>": while events stream in, the ingestion side (worker, broker,
# producer) runs on the first CPUs and the serving side (the reader or the bare app, and wrk) on
# the second, for the engine's and the baseline's rounds alike: what PERSONA_WORKER_CPUS and
# PERSONA_READER_CPUS do (every thread's affinity), applied only for that phase, so the bulk load
# that sets the offered rate (half of it) and the idle rounds run on the whole machine. Default:
# the first half of the CPUs / the rest ("0/1" on 2 CPUs); "none": the kernel places everything
# (with 2 CPUs the p99 while streaming was then 7.96-10.27 ms for the engine, 7.89-9.95 for the
# baseline: their event loops waited for a core 27-31% of each round).
_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
_HALF = len(_CPUS) // 2
_DEFAULT_PIN = (
    f"{','.join(map(str, _CPUS[:_HALF]))}/{','.join(map(str, _CPUS[_HALF:]))}"
    if len(_CPUS) >= 2
    else ""
)
PIN = os.environ.get("BENCH_PIN", _DEFAULT_PIN).replace("none", "")
QUIET_SHARE = 0.25  # idle GETs start once the worker uses less than this share of a core ...
QUIET_TIMEOUT = 120.0  # ... or after this many seconds
T0 = 1_320_000_000_000
# the processes whose CPU each GET round records, in the table's order (wrk: the load generator)
CPU_COLUMNS = ("reader", "worker", "bare", "broker", "producer", "wrk")
TEMPLATE = """<html><body><p>Hello {{ user.first_name | default("there") }},</p>
{{ blocks.recommendations }}
{% if user.cart_items %}{{ blocks.cart_reminder }}{% endif %}
{{ blocks.winback }}
<p>Unsubscribe: https://shop.example.com/u/{{ user.user_id }}</p></body></html>"""

BARE_APP = textwrap.dedent(
    """
    import asyncio, sys, msgpack
    from pathlib import Path
    from aiohttp import web
    from aiokafka.partitioner import DefaultPartitioner
    from rocksdict import AccessType, Options, Rdict
    data, port, parts = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    tables = data / "faust" / "v1" / "tables"
    def secondary(p):
        options = Options(raw_mode=True)
        options.set_max_open_files(-1)
        options.set_max_file_opening_threads(1)
        path = data / "bare-secondary" / str(p)
        path.mkdir(parents=True, exist_ok=True)
        access = AccessType.secondary(str(path))
        return Rdict(str(tables / f"profiles-{p}.db"), options, access_type=access)
    dbs = [secondary(p) for p in range(parts)]
    partitioner, every, partitions = DefaultPartitioner(), list(range(parts)), {}
    def raw(uid):
        p = partitions.get(uid)
        if p is None:
            p = partitions[uid] = partitioner(uid.encode(), every, every)
        return dbs[p].get(b"u:" + uid.encode()) or b""  # the worker's key (streams/keys.py)
    async def follow(app):  # sees the worker's writes as the readers do: every 150 ms
        async def loop():
            while True:
                await asyncio.sleep(0.15)
                for db in dbs:
                    db.try_catch_up_with_primary()
        task = asyncio.create_task(loop())
        yield
        task.cancel()
    async def one(request):
        return web.Response(body=raw(request.match_info["u"]), content_type="application/msgpack")
    async def many(request):
        ids = msgpack.unpackb(await request.read())["user_ids"]
        out = {u: raw(u) for u in ids}
        return web.Response(body=msgpack.packb({"results": out}), content_type="application/msgpack")
    app = web.Application()
    app.cleanup_ctx.append(follow)
    app.router.add_get("/u/{u}", one)
    app.router.add_post("/batch", many)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
    """
)


def user(n: int) -> str:
    return f"b{n}"


def synthetic_events(items: list[str], users: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(items))]
    events: list[dict[str, Any]] = []
    for n in range(users):
        uid = user(n)
        ts = T0 + rng.randrange(0, 5 * 86_400_000)
        picks = rng.choices(items, weights, k=rng.randint(2, 4))
        for i, item in enumerate(picks):
            kind = ("product_view", "add_to_cart", "purchase")[min(i, 2)] if i else "product_view"
            events.append(
                {
                    "event_id": f"{uid}-{i}",
                    "type": kind,
                    "user_id": uid,
                    "ts": ts + i * 60_000,
                    "item_id": item,
                    "quantity": 1,
                    "price": 2.5,
                    "currency": "GBP",
                }
            )
    events.sort(key=lambda e: e["ts"])  # a shop's stream is (roughly) in event-time order
    return events


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {SECRET}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except Exception:
        return 0, b""


def processed(worker_base: str) -> int:
    _status, body = get(worker_base + "/metrics")
    total = 0
    for line in body.decode().splitlines():
        if line.startswith(COUNTED):
            total += int(float(line.split()[-1]))
    return total


COUNTED = (
    "persona_events_processed_total",
    "persona_events_duplicate_total",
    "persona_events_dead_lettered_total",
)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, share: float = QUIET_SHARE, timeout: float = QUIET_TIMEOUT) -> float:
    """Wait until the process used less than `share` of a core over a second (the worker goes on
    flushing and compacting RocksDB after the bulk load: not idle); returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < share:
            break
    return time.monotonic() - started


def wrk(url: str, paths_lua: Path, seconds: int, pin_wrk: bool = False) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99, non-2xx/3xx count and wrk's own CPU (share of a core)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(paths_lua), url]
    if WRK_SLICE:  # wrk (and its threads) start with the short slice: see WRK_SLICE
        command = [sys.executable, "-c", _SLICED_EXEC, str(WRK_SLICE), *command]
    if PIN and pin_wrk:
        command = ["taskset", "-c", PIN.split("/")[1], *command]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "cpu_wrk": used / seconds,
    }


def pin(pids: list[int], cpus: frozenset[int]) -> None:
    """Every thread of `pids` onto `cpus` (threads started later inherit it), as
    PERSONA_WORKER_CPUS / PERSONA_READER_CPUS do at start-up; a process that has exited is
    passed over."""
    for pid in pids:
        with contextlib.suppress(OSError):
            place(cpus, pid)


def pinned(side: str) -> frozenset[int] | None:
    """The CPUs of `side` ("ingest" or "serve") under BENCH_PIN, None when unpinned."""
    if not PIN:
        return None
    ingest, serve = PIN.split("/")
    return parse_cpus(ingest if side == "ingest" else serve)


def mean_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far per named group of processes (a process that exited counts 0)."""
    out = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        out[name] = total
    return out


SERVERS = ("reader", "bare")  # the processes whose main thread's run-queue wait is recorded


def waited_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """Seconds the main thread (the event loop) of each server spent runnable but waiting for a
    core, so far (/proc/<pid>/schedstat, second field; 0 where it cannot be read)."""
    out = {}
    for name in SERVERS:
        total = 0.0
        for pid in pids.get(name, []):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
        out[name] = total
    return out


STEP = "persona_reader_catch_up_step_seconds_bucket"  # one database's catch-up (histogram)
READER_COUNTERS = {  # the reader's /metrics counters each engine round records, per second
    "persona_block_cache_misses_total": "renders_per_s",
    "persona_reader_catch_ups_total": "catch_ups_per_s",
    "persona_reader_catch_up_seconds_total": "catch_up_share",  # seconds per second
    f'{STEP}{{le="0.001"}}': "steps_to_1ms",
    f'{STEP}{{le="0.002"}}': "steps_to_2ms",
    f'{STEP}{{le="0.005"}}': "steps_to_5ms",
    f'{STEP}{{le="+Inf"}}': "steps",
}


def reader_counters(base: str) -> dict[str, float]:
    """READER_COUNTERS from the reader on the public port (one reader: every scrape is its own)."""
    _status, body = get(base + "/metrics")
    out = dict.fromkeys(READER_COUNTERS.values(), 0.0)
    for line in body.decode().splitlines():
        name, _, value = line.partition(" ")
        if name in READER_COUNTERS:
            out[READER_COUNTERS[name]] = float(value)
    return out


def measured_turn(
    url: str,
    lua: Path,
    pids: dict[str, list[int]],
    worker_base: str | None = None,
    reader_base: str | None = None,
    pin_wrk: bool = False,
) -> dict[str, float]:
    """One wrk round, with the CPU each process group used meanwhile (`cpu_<name>`: a share of
    one core), given the worker's URL the events it ingested meanwhile (events/s), given the
    reader's URL its READER_COUNTERS meanwhile."""
    events_before = processed(worker_base) if worker_base else 0
    counters_before = reader_counters(reader_base) if reader_base else {}
    cpu_before, wait_before, started = cpu_of(pids), waited_seconds(pids), time.monotonic()
    out = wrk(url, lua, WRK_SECONDS, pin_wrk)
    cpu_after, wait_after, took = cpu_of(pids), waited_seconds(pids), time.monotonic() - started
    for name in pids:
        out[f"cpu_{name}"] = (cpu_after[name] - cpu_before[name]) / took
    for name in SERVERS:  # share of the round the server's event loop waited for a core
        out[f"runq_{name}"] = (wait_after[name] - wait_before[name]) / took
    if worker_base:
        out["ingested_events_per_s"] = (processed(worker_base) - events_before) / took
    if reader_base:
        counters = reader_counters(reader_base)
        for key, value in counters.items():
            out[key] = (value - counters_before[key]) / took
    return out


def lua_script(path: Path, prefix: str, suffix: str, users: list[str], auth: bool) -> None:
    ids = ",".join(f'"{u}"' for u in users)
    header = f'wrk.headers["Authorization"] = "Bearer {SECRET}"\n' if auth else ""
    path.write_text(
        header
        + f"local ids = {{{ids}}}\n"
        + "math.randomseed(42)\n"
        + "request = function()\n"
        + f'  return wrk.format("GET", "{prefix}" .. ids[math.random(#ids)] .. "{suffix}")\n'
        + "end\n"
    )


async def post_loop(
    url: str, body: bytes, headers: dict[str, str], seconds: float, per: int, conc: int = 2
) -> float:
    """Items per second over `seconds` with `conc` concurrent requests of `per` items each."""
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(headers=headers) as session:

        async def loop() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.post(url, data=body) as r:
                    await r.read()
                    assert r.status == 200, r.status
                done += per

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(conc)))
        return done / (time.monotonic() - started)


async def produce(broker_url: str, events: list[dict[str, Any]], rate: float | None) -> int:
    from streams.produce import Producer

    async with Producer(broker_url) as producer:
        return await producer.send_events((validate(e) for e in events), rate=rate)


def stream_events(items: list[str], start_ts: int, rate: float) -> list[dict[str, Any]]:
    """The events streamed while GETs are measured: other events of the same users, after the
    loaded ones. STREAM_TIME "live" (the default): their event times follow the wall clock at
    the offered rate, from `start_ts` on, as a shop's live stream does; "replay": the times of the
    synthetic data (5 days, ~2 hours of event time per second at ~5k events/s, so the event-time
    clock's hour, part of every block's stamp, changes about twice a second)."""
    events = synthetic_events(items, USERS, seed=99)
    for n, e in enumerate(events):
        e["event_id"] += "-s"
        if STREAM_TIME == "live":
            e["ts"] = start_ts + int(n * 1000 / rate)
        else:
            e["ts"] += start_ts - T0
    return events


def stream_process(broker_url: str, events: list[dict[str, Any]], rate: float) -> None:
    """The streaming phase's producer, in a process of its own (its CPU is then measured apart
    from the benchmark's, and it shares no GIL with it): `events` at `rate`.

    A shop's producer runs on the shop's machines; here it shares the two cores with what is
    measured, so it is kept cheap: librdkafka (the confluent-kafka dev dependency) with the
    messages encoded before the first is sent, keyed by user and placed by murmur2 as Kafka's
    Java client and `streams.produce` place them. Without confluent-kafka: `streams.produce`
    (aiokafka, ~0.26 of a core at ~4,000 events/s here)."""
    try:
        import confluent_kafka
    except ImportError:
        asyncio.run(produce(broker_url, events, rate))
        return
    from engine.events import encode
    from streams.kafka_security import as_config

    messages = []
    for e in events:
        event = validate(e)
        messages.append((event.topic(), encode(event, "msgpack"), event.user_id.encode()))
    producer = confluent_kafka.Producer(
        {
            **as_config(broker_url).librdkafka(),  # the clients' one configuration
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "acks": 1,
            "enable.idempotence": False,
        }
    )
    started = time.monotonic()
    for sent, (topic, value, key) in enumerate(messages, 1):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.01)
        if sent % 64 == 0:
            producer.poll(0)
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(60)


def wait_processed(worker_base: str, target: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if processed(worker_base) >= target:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def main() -> int:
    if shutil.which("wrk") is None:
        print("benchmarks need wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="persona-bench-"))
    broker = EmbeddedBroker(log_file=tmp / "broker.log").start()
    port, bare_port = free_port(), free_port()
    env = {
        **os.environ,
        "PERSONA_API_KEYS": f"bench:{SECRET}:content:read,events:write,feeds:read",
        "PERSONA_PARTITIONS": str(PARTITIONS),
        "PERSONA_LOG_LEVEL": "warning",
        "PERSONA_READERS": os.environ.get("PERSONA_READERS", "1"),
        # on a broker URL every process signs with the cluster secret (engine/signing.py)
        "PERSONA_CLUSTER_SECRET": os.environ.get("PERSONA_CLUSTER_SECRET", "bench-" + "c" * 32),
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "persona", "run", "--no-demo", "--broker", broker.url,
         "--port", str(port), "--data-dir", str(tmp / "data")],
        cwd=ROOT, env=env, stdout=(tmp / "run.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    bare: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {
        "users": USERS,
        "partitions": PARTITIONS,
        "cpus": os.cpu_count(),
        "wrk_slice_s": WRK_SLICE or None,
    }
    try:
        worker_base = ""
        while "ready on" not in (tmp / "run.log").read_text():
            if run.poll() is not None:
                raise RuntimeError("persona run exited:\n" + (tmp / "run.log").read_text())
            time.sleep(0.5)
        m = re.search(r"worker on (http://\S+)", (tmp / "run.log").read_text())
        worker_base = m.group(1) if m else f"http://127.0.0.1:{port}"
        base = f"http://127.0.0.1:{port}"
        items = [p.item_id for p in read_catalog(ROOT / "persona/demo/catalog.jsonl.gz")]
        asyncio.run(_catalog(broker.url))
        events = synthetic_events(items, USERS)
        print(f"loading {len(events)} events of {USERS} users ...", flush=True)
        started = time.monotonic()
        asyncio.run(produce(broker.url, events, None))
        wait_processed(worker_base, len(events), 1800)
        ingest = len(events) / (time.monotonic() - started)
        results["ingest_events_per_s"] = ingest
        time.sleep(2)

        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_APP, str(tmp / "data"), str(bare_port), str(PARTITIONS)],
            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        bare_base = f"http://127.0.0.1:{bare_port}"
        while get(bare_base + "/u/b0")[0] != 200:
            time.sleep(0.2)
        sample = [user(n) for n in random.Random(1).sample(range(USERS), 2000)]
        engine_lua, bare_lua = tmp / "engine.lua", tmp / "bare.lua"
        lua_script(engine_lua, "/v1/users/", "/blocks/recommendations", sample, True)
        lua_script(bare_lua, "/u/", "", sample, False)
        for u in sample:  # warm the block cache: send time serves cached blocks
            get(f"{base}/v1/users/{u}/blocks/recommendations")

        # "idle": the worker is done flushing and compacting after the bulk load (it used most
        # of a core for a while after it); then engine and baseline take turns (GET_ROUNDS
        # each), so neither is measured only while another process happens to run; the figures
        # are the means of the rounds, every round is kept in the raw JSON with the CPU the
        # worker used meanwhile (a share of one core)
        kids = {pid: cmdline(pid) for pid in children(run.pid)}
        worker_pid = next(p for p, c in kids.items() if " worker " in c)
        reader_pids = [p for p, c in kids.items() if " reader " in c]
        pids = {"reader": reader_pids, "worker": [worker_pid], "bare": [bare.pid],
                "broker": [broker.proc.pid] if broker.proc else []}  # fmt: skip
        results["idle_wait_s"] = wait_quiet(worker_pid)

        rounds = [(measured_turn(base, engine_lua, pids, reader_base=base),
                   measured_turn(bare_base, bare_lua, pids)) for _ in range(GET_ROUNDS)]  # fmt: skip
        results["get_idle"] = {"engine": mean_of([e for e, _ in rounds]),
                               "bare": mean_of([b for _, b in rounds]),
                               "rounds": [{"engine": e, "bare": b} for e, b in rounds]}  # fmt: skip

        # while events stream in at half the ingest rate: one producer process for the whole
        # phase, engine and baseline taking turns as in the idle rounds (same rate, same load)
        rate = STREAM_RATE or ingest / 2
        turns = 2 * GET_ROUNDS + (1 if PROFILE else 0)
        # the stream goes on from the newest loaded event (the load's hour of event time)
        streamed = stream_events(items, events[-1]["ts"] + 1000, rate)
        count = min(int(rate * (turns * (WRK_SECONDS + 1) + 5)), len(streamed))
        streamed = streamed[:count]
        hours = (streamed[-1]["ts"] - streamed[0]["ts"]) / 3_600_000
        before = processed(worker_base)
        spawn = multiprocessing.get_context("spawn")
        producer = spawn.Process(target=stream_process, args=(broker.url, streamed, rate))
        producer.start()
        assert producer.pid is not None
        pids["producer"] = [producer.pid]
        ingest_cpus, serve_cpus = pinned("ingest"), pinned("serve")
        if ingest_cpus is not None and serve_cpus is not None:
            pin(pids["worker"] + pids["broker"] + pids["producer"], ingest_cpus)
            pin(pids["reader"] + pids["bare"], serve_cpus)
        results["pin"] = PIN or None
        # the rounds start once events flow in: the producer generates its events first
        results["stream_wait_s"] = wait_processed(worker_base, before + int(rate), 60)
        rounds = [(measured_turn(base, engine_lua, pids, worker_base, base, pin_wrk=True),
                   measured_turn(bare_base, bare_lua, pids, worker_base, pin_wrk=True))
                  for _ in range(GET_ROUNDS)]  # fmt: skip
        if PROFILE:
            results["profile"] = profile_round(base, engine_lua, reader_pids[0])
        still_streaming = producer.is_alive()
        producer.join(120)
        results["get_streaming"] = {
            "engine": mean_of([e for e, _ in rounds]),
            "bare": mean_of([b for _, b in rounds]),
            "rounds": [{"engine": e, "bare": b} for e, b in rounds],
            "offered_events_per_s": rate,
            "events_streamed": count,
            "event_time": STREAM_TIME,
            "event_time_hours_streamed": hours,
            "producer_still_streaming_after_rounds": still_streaming,
            "events_before": before,
            "events_after": processed(worker_base),
        }
        del pids["producer"]
        if PIN:  # the batch and render rounds run unpinned again
            everything = frozenset(os.sched_getaffinity(0))
            pin([pid for group in pids.values() for pid in group], everything)

        # batch, msgpack, cached blocks: once the worker has folded what was streamed (it goes
        # on folding a backlog after the producer stops, and each folded event changes a
        # profile, so blocks are rendered again and the worker takes CPU: batch runs right after
        # the streaming phase measured 40,029-114,200 blocks/s)
        results["batch_wait_s"] = wait_quiet(worker_pid)
        ids = sample[:1000]
        batch_body = msgpack.packb({"block": "recommendations", "format": "html", "user_ids": ids})
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/msgpack",
                   "Accept": "application/msgpack"}  # fmt: skip
        asyncio.run(post_loop(base + "/v1/blocks:batch", batch_body, headers, 2, 1000))  # warm
        worker_cpu = cpu_seconds(worker_pid)
        results["batch_blocks_per_s"] = {
            "engine": asyncio.run(post_loop(base + "/v1/blocks:batch", batch_body, headers, 10, 1000)),
            "bare": asyncio.run(post_loop(bare_base + "/batch", msgpack.packb({"user_ids": ids}),
                                          {}, 10, 1000)),
        }  # fmt: skip
        results["batch_worker_cpu"] = (cpu_seconds(worker_pid) - worker_cpu) / 20  # both loops
        render_ids = sample[:100]
        render_body = msgpack.packb({"template": TEMPLATE, "user_ids": render_ids,
                                     "data": {u: {"first_name": "Ada"} for u in render_ids}})  # fmt: skip
        asyncio.run(post_loop(base + "/v1/render", render_body, headers, 2, 100))
        results["render_messages_per_s"] = {
            "engine": asyncio.run(post_loop(base + "/v1/render", render_body, headers, 10, 100)),
            "bare_batch_values_per_s": results["batch_blocks_per_s"]["bare"],
        }

        # memory
        tables = tmp / "data" / "faust" / "v1" / "tables"
        files = [f for d in tables.glob("profiles-*.db") for f in d.iterdir() if f.is_file()]
        disk = sum(f.stat().st_size for f in files)
        wal = sum(f.stat().st_size for f in files if f.suffix == ".log")
        sizes = []
        for u in sample[:500]:
            _status, body = get(f"{bare_base}/u/{u}")
            sizes.append(len(body))
        results["memory"] = {
            "profiles_disk_bytes": disk,
            "disk_bytes_per_user": disk / USERS,
            # the write-ahead logs (recent writes, until the memtables are flushed) and repeated
            # writes of a user not yet compacted are in `disk`; `compacted_bytes_per_user` is
            # the same databases flushed and compacted once the worker has stopped
            "wal_bytes": wal,
            "packed_profile_bytes_mean": sum(sizes) / len(sizes),
            "worker_rss_mb": rss_kb(worker_pid) / 1024,
            "reader_rss_mb": [rss_kb(p) / 1024 for p in reader_pids],
            "bare_rss_mb": rss_kb(bare.pid) / 1024,
        }
    finally:
        if bare is not None:
            bare.terminate()
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(20)
        except subprocess.TimeoutExpired:
            run.kill()
        broker.stop(timeout=5)
        if "memory" in results and run.returncode is not None:
            compacted = compacted_bytes(tmp / "data" / "faust" / "v1" / "tables")
            results["memory"]["compacted_bytes_per_user"] = compacted / USERS
        shutil.rmtree(tmp, ignore_errors=True)
    report(results)
    return 0


def compacted_bytes(tables: Path) -> int:
    """The profiles' RocksDB files once flushed and fully compacted (the worker has stopped):
    what the state itself takes, without write-ahead logs and superseded versions."""
    from rocksdict import Options, Rdict

    total = 0
    for path in sorted(tables.glob("profiles-*.db")):
        db = Rdict(str(path), options=Options(raw_mode=True))
        db.flush()
        db.compact_range(None, None)
        db.close()
        total += sum(f.stat().st_size for f in path.iterdir() if f.suffix == ".sst")
    return total


def profile_round(url: str, lua: Path, reader_pid: int) -> dict[str, Any]:
    """One more engine round while events stream in, the reader sampled by py-spy (not part of
    the figures: sampling slows the reader); the raw collapsed stacks go to PROFILE."""
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--native", "--format", "raw", "--rate", "200",
         "-d", str(WRK_SECONDS), "-o", PROFILE, "-p", str(reader_pid)],
        stdout=subprocess.DEVNULL, stderr=(Path(PROFILE).with_suffix(".log")).open("w"),
    )  # fmt: skip
    out = wrk(url, lua, WRK_SECONDS)
    spy.wait(60)
    return {"file": PROFILE, "wrk": out}


async def _catalog(broker_url: str) -> None:
    from persona.cli import import_catalog

    await import_catalog(
        broker_url, PARTITIONS, read_catalog(ROOT / "persona/demo/catalog.jsonl.gz")
    )
    await asyncio.sleep(2)


def report(r: dict[str, Any]) -> None:
    out = results_file.save("serving", r)
    gi, gs = r["get_idle"], r["get_streaming"]
    b, rn, m = r["batch_blocks_per_s"], r["render_messages_per_s"], r["memory"]
    compacted = m.get("compacted_bytes_per_user", float("nan"))

    def cpus(x: dict[str, float]) -> str:
        return " ".join(f"{x.get('cpu_' + k, 0):.2f}" for k in CPU_COLUMNS)

    def steps(x: dict[str, float]) -> str:
        a, b, c, d = (x[k] for k in ("steps_to_1ms", "steps_to_2ms", "steps_to_5ms", "steps"))
        return f"{a:.1f} / {b - a:.1f} / {c - b:.1f} / {d - c:.1f}"

    def get_rows(title: str, g: dict[str, Any]) -> list[tuple[str, str, str, str]]:
        e, bare = g["engine"], g["bare"]
        return [
            (f"GET block {title}, req/s", f"{e['rps']:,.0f}", f"{bare['rps']:,.0f}",
             f"{e['rps'] / bare['rps']:.2f}"),
            (f"GET block {title}, p50 / p99 ms", f"{e['p50_ms']:.2f} / {e['p99_ms']:.2f}",
             f"{bare['p50_ms']:.2f} / {bare['p99_ms']:.2f}", ""),
            *[(f"  round {n}: req/s, p99 ms", f"{x['engine']['rps']:,.0f}, {x['engine']['p99_ms']:.2f}",
               f"{x['bare']['rps']:,.0f}, {x['bare']['p99_ms']:.2f}",
               f"{x['engine']['rps'] / x['bare']['rps']:.2f}") for n, x in enumerate(g["rounds"], 1)],
            *[(f"  round {n}: CPU {'/'.join(CPU_COLUMNS)}", cpus(x["engine"]), cpus(x["bare"]), "")
              for n, x in enumerate(g["rounds"], 1)],
            *[(f"  round {n}: server's event loop waiting for a core (share)",
               f"{x['engine'].get('runq_reader', 0):.3f}", f"{x['bare'].get('runq_bare', 0):.3f}", "")
              for n, x in enumerate(g["rounds"], 1)],
            *[(f"  round {n}: renders/s, catch-ups/s, catch-up share",
               f"{x['engine']['renders_per_s']:,.0f}, {x['engine']['catch_ups_per_s']:.1f}, "
               f"{x['engine']['catch_up_share']:.3f}", "", "") for n, x in enumerate(g["rounds"], 1)],
            *[(f"  round {n}: catch-up steps/s: <=1 / 1-2 / 2-5 / >5 ms",
               steps(x["engine"]), "", "") for n, x in enumerate(g["rounds"], 1)],
        ]  # fmt: skip

    rows = [
        ("ingest (bulk load), events/s", f"{r['ingest_events_per_s']:,.0f}", "", ""),
        *get_rows("idle", gi),
        *get_rows("while streaming", gs),
        *[(f"  round {n}: events ingested, /s", f"{x['engine']['ingested_events_per_s']:,.0f}",
           f"{x['bare']['ingested_events_per_s']:,.0f}", "") for n, x in enumerate(gs["rounds"], 1)],
        ("events offered while streaming, /s", f"{gs['offered_events_per_s']:,.0f}", "", ""),
        ("batch (msgpack, 1000 users), blocks/s", f"{b['engine']:,.0f}", f"{b['bare']:,.0f}",
         f"{b['engine'] / b['bare']:.2f}"),
        ("render (3 blocks, 100 users/req), msg/s", f"{rn['engine']:,.0f}",
         f"{rn['bare_batch_values_per_s']:,.0f}", f"{rn['engine'] / rn['bare_batch_values_per_s']:.2f}"),
        ("profile state on disk, bytes/user", f"{m['disk_bytes_per_user']:,.0f}", "", ""),
        ("  of it write-ahead log, bytes/user", f"{m['wal_bytes'] / r['users']:,.0f}", "", ""),
        ("  flushed and compacted, bytes/user", f"{compacted:,.0f}", "", ""),
        ("packed profile, bytes (mean)", f"{m['packed_profile_bytes_mean']:,.0f}", "", ""),
        ("RSS worker / reader(s) / bare, MB",
         f"{m['worker_rss_mb']:,.0f} / {', '.join(f'{x:,.0f}' for x in m['reader_rss_mb'])}",
         f"{m['bare_rss_mb']:,.0f}", ""),
    ]  # fmt: skip
    width = max(len(row[0]) for row in rows)
    print(f"\n{'figure':<{width}}  {'engine':>22}  {'bare baseline':>15}  ratio")
    for name, engine, bare, ratio in rows:
        print(f"{name:<{width}}  {engine:>22}  {bare:>15}  {ratio}")
    sides = PIN.split("/") if PIN else []
    pin_note = (
        f"while streaming, ingestion on CPUs {sides[0]}, serving on {sides[1]}; " if PIN else ""
    )
    print(f"\n{r['users']:,} users, {r['cpus']} CPUs; idle GETs after waiting "
          f"{r['idle_wait_s']:.0f} s for the worker to go quiet; while streaming, "
          f"{gs['events_streamed']:,} events covering {gs['event_time_hours_streamed']:.2f} h of "
          f"event time; wrk's CPU slice: {f'{WRK_SLICE * 1000:g} ms' if WRK_SLICE else 'default'}; "
          f"{pin_note}"
          f"CPU: share of one core over each round; raw figures: {out}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
