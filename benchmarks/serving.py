# ruff: noqa: E501  (the report table and the embedded baseline app read better unwrapped)
"""Send-time serving benchmark (`make bench`): the real engine beside a raw baseline.

Starts the embedded broker and `persona run` (worker on a private port + PERSONA_READERS readers on
the public port), loads the demo catalog (persona/demo/catalog.jsonl.gz) and USERS synthetic
shoppers (product views, carts and purchases of real catalog items, Zipf-skewed), then measures:

- ingest: events/s the worker folds (bulk load);
- GET one block with wrk (32 connections, random users): engine vs a bare aiohttp app reading the
  same profile bytes from the same RocksDB files (secondary) — idle (once the worker is done
  flushing and compacting after the load: under a quarter of a core over a second, at most
  120 s; engine and baseline taking turns, BENCH_GET_ROUNDS rounds each, means reported, the
  worker's CPU per round in the JSON), then while events stream in at half the measured ingest
  rate (reporting the ingest rate reached meanwhile);
- batch: blocks/s of POST /v1/blocks:batch (1000 users, msgpack, cached blocks) vs the bare app
  returning the 1000 raw profiles as msgpack;
- render: messages/s of POST /v1/render with a 3-block template (vs the bare batch);
- memory: bytes of profile state per user on disk, packed profile size, RSS of worker and reader.

Prints a table and writes benchmarks/results/serving-<time>.json. Needs `wrk` on PATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
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

from engine.events import validate  # noqa: E402
from engine.sources import read_catalog  # noqa: E402
from streams.broker import EmbeddedBroker, free_port  # noqa: E402

USERS = int(os.environ.get("BENCH_USERS", "100000"))
PARTITIONS = 4
SECRET = "bench-secret"
WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
GET_ROUNDS = int(os.environ.get("BENCH_GET_ROUNDS", "2"))
QUIET_SHARE = 0.25  # idle GETs start once the worker uses less than this share of a core ...
QUIET_TIMEOUT = 120.0  # ... or after this many seconds
T0 = 1_320_000_000_000
RESULTS = ROOT / "benchmarks" / "results"
TEMPLATE = """<html><body><p>Hello {{ user.first_name | default("there") }},</p>
{{ blocks.recommendations }}
{% if user.cart_items %}{{ blocks.cart_reminder }}{% endif %}
{{ blocks.winback }}
<p>Unsubscribe: https://shop.example.com/u/{{ user.user_id }}</p></body></html>"""

BARE_APP = textwrap.dedent(
    """
    import sys, msgpack
    from aiohttp import web
    from streams.readers import SecondaryState
    from pathlib import Path
    data, port, parts = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    state = SecondaryState(data, parts, data / "bare-secondary")
    state.refresh()
    table = state.tables["profiles"]
    def raw(uid):
        return table.get(state.partition_of(uid), uid.encode()) or b""
    async def one(request):
        return web.Response(body=raw(request.match_info["u"]), content_type="application/msgpack")
    async def many(request):
        ids = msgpack.unpackb(await request.read())["user_ids"]
        out = {u: raw(u) for u in ids}
        return web.Response(body=msgpack.packb({"results": out}), content_type="application/msgpack")
    app = web.Application()
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


def wrk(url: str, paths_lua: Path, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(paths_lua), url],
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

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def mean_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}


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
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "persona", "run", "--no-demo", "--broker", broker.url,
         "--port", str(port), "--data-dir", str(tmp / "data")],
        cwd=ROOT, env=env, stdout=(tmp / "run.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    bare: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {"users": USERS, "partitions": PARTITIONS, "cpus": os.cpu_count()}
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
        results["idle_wait_s"] = wait_quiet(worker_pid)

        def turn(url: str, lua: Path) -> dict[str, float]:
            before = cpu_seconds(worker_pid)
            out = wrk(url, lua, WRK_SECONDS)
            out["worker_cpu"] = (cpu_seconds(worker_pid) - before) / WRK_SECONDS
            return out

        rounds = [(turn(base, engine_lua), turn(bare_base, bare_lua)) for _ in range(GET_ROUNDS)]
        results["get_idle"] = {"engine": mean_of([e for e, _ in rounds]),
                               "bare": mean_of([b for _, b in rounds]),
                               "rounds": [{"engine": e, "bare": b} for e, b in rounds]}  # fmt: skip

        # while events stream in at half the ingest rate
        stream_events = synthetic_events(items, USERS, seed=99)
        for e in stream_events:
            e["event_id"] += "-s"
            e["ts"] += 6 * 86_400_000
        rate = ingest / 2
        count = int(rate * (WRK_SECONDS + 2))
        before = processed(worker_base)

        async def streamed() -> int:
            return await produce(broker.url, stream_events[:count], rate)

        import threading

        box: dict[str, int] = {}
        thread = threading.Thread(target=lambda: box.setdefault("n", asyncio.run(streamed())))
        thread.start()
        time.sleep(1)
        t0, p0 = time.monotonic(), processed(worker_base)
        loaded_engine = wrk(base, engine_lua, WRK_SECONDS)
        t1, p1 = time.monotonic(), processed(worker_base)
        thread.join()
        bare_loaded_before = processed(worker_base)
        results["get_streaming"] = {
            "engine": loaded_engine,
            "offered_events_per_s": rate,
            "ingested_events_per_s_during_wrk": (p1 - p0) / (t1 - t0),
            "events_before": before,
            "events_after": bare_loaded_before,
        }

        # batch, msgpack, cached blocks
        ids = sample[:1000]
        batch_body = msgpack.packb({"block": "recommendations", "format": "html", "user_ids": ids})
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/msgpack",
                   "Accept": "application/msgpack"}  # fmt: skip
        asyncio.run(post_loop(base + "/v1/blocks:batch", batch_body, headers, 2, 1000))  # warm
        results["batch_blocks_per_s"] = {
            "engine": asyncio.run(post_loop(base + "/v1/blocks:batch", batch_body, headers, 10, 1000)),
            "bare": asyncio.run(post_loop(bare_base + "/batch", msgpack.packb({"user_ids": ids}),
                                          {}, 10, 1000)),
        }  # fmt: skip
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
        disk = sum(f.stat().st_size for d in tables.glob("profiles-*.db") for f in d.iterdir())
        sizes = []
        for u in sample[:500]:
            _status, body = get(f"{bare_base}/u/{u}")
            sizes.append(len(body))
        reader_pids = [p for p, c in kids.items() if " reader " in c]
        results["memory"] = {
            "profiles_disk_bytes": disk,
            "disk_bytes_per_user": disk / USERS,
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
        shutil.rmtree(tmp, ignore_errors=True)
    report(results)
    return 0


async def _catalog(broker_url: str) -> None:
    from persona.cli import import_catalog

    await import_catalog(
        broker_url, PARTITIONS, read_catalog(ROOT / "persona/demo/catalog.jsonl.gz")
    )
    await asyncio.sleep(2)


def report(r: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serving-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(r, indent=2))
    gi, gs = r["get_idle"], r["get_streaming"]
    b, rn, m = r["batch_blocks_per_s"], r["render_messages_per_s"], r["memory"]
    rows = [
        ("ingest (bulk load), events/s", f"{r['ingest_events_per_s']:,.0f}", "", ""),
        ("GET block idle, req/s", f"{gi['engine']['rps']:,.0f}", f"{gi['bare']['rps']:,.0f}",
         f"{gi['engine']['rps'] / gi['bare']['rps']:.2f}"),
        ("GET block idle, p50 / p99 ms", f"{gi['engine']['p50_ms']:.2f} / {gi['engine']['p99_ms']:.2f}",
         f"{gi['bare']['p50_ms']:.2f} / {gi['bare']['p99_ms']:.2f}", ""),
        *[(f"  round {n}: req/s, p99 ms, worker CPU",
           f"{x['engine']['rps']:,.0f}, {x['engine']['p99_ms']:.2f}, {x['engine'].get('worker_cpu', 0):.2f}",
           f"{x['bare']['rps']:,.0f}, {x['bare']['p99_ms']:.2f}, {x['bare'].get('worker_cpu', 0):.2f}",
           f"{x['engine']['rps'] / x['bare']['rps']:.2f}") for n, x in enumerate(gi["rounds"], 1)],
        ("GET block while streaming, req/s", f"{gs['engine']['rps']:,.0f}", "", ""),
        ("GET while streaming, p50 / p99 ms",
         f"{gs['engine']['p50_ms']:.2f} / {gs['engine']['p99_ms']:.2f}", "", ""),
        ("events offered / ingested during wrk, /s",
         f"{gs['offered_events_per_s']:,.0f} / {gs['ingested_events_per_s_during_wrk']:,.0f}", "", ""),
        ("batch (msgpack, 1000 users), blocks/s", f"{b['engine']:,.0f}", f"{b['bare']:,.0f}",
         f"{b['engine'] / b['bare']:.2f}"),
        ("render (3 blocks, 100 users/req), msg/s", f"{rn['engine']:,.0f}",
         f"{rn['bare_batch_values_per_s']:,.0f}", f"{rn['engine'] / rn['bare_batch_values_per_s']:.2f}"),
        ("profile state on disk, bytes/user", f"{m['disk_bytes_per_user']:,.0f}", "", ""),
        ("packed profile, bytes (mean)", f"{m['packed_profile_bytes_mean']:,.0f}", "", ""),
        ("RSS worker / reader(s) / bare, MB",
         f"{m['worker_rss_mb']:,.0f} / {', '.join(f'{x:,.0f}' for x in m['reader_rss_mb'])}",
         f"{m['bare_rss_mb']:,.0f}", ""),
    ]  # fmt: skip
    width = max(len(row[0]) for row in rows)
    print(f"\n{'figure':<{width}}  {'engine':>22}  {'bare baseline':>15}  ratio")
    for name, engine, bare, ratio in rows:
        print(f"{name:<{width}}  {engine:>22}  {bare:>15}  {ratio}")
    print(f"\n{r['users']:,} users, {r['cpus']} CPUs; idle GETs after waiting "
          f"{r['idle_wait_s']:.0f} s for the worker to go quiet; raw figures: {out}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
