"""Single block GETs while `POST /v1/blocks:batch` computes 1000 uncached users' blocks.

A sender's block GET at send time has a tight time limit; a batch of uncached users is computed
on the same event loop. This measures how long the single GETs wait behind the batches:

- a server process: the API over the in-memory state (`api.testing.MemoryState`) with the demo
  catalog (persona/demo/catalog.jsonl.gz) and the shipped default models, served by `HotRunner`
  as a reader serves it; `--users` shoppers with a few product views, a cart and a purchase of
  items the recommender knows;
- a batch process: `--batches` batches of `--batch` distinct users each (msgpack both ways, HTML
  recommendations), one after the other, no user twice (nothing is answered from the block
  cache);
- this process: one single-user GET of a cached block (a warmed user, so its own cost is a
  dictionary lookup: what it measures is the wait) due every `--gap-ms` on a fixed schedule
  (latency from the time it was due, so the GETs due while one is stuck count too), first for
  `--idle-seconds` with no batch running, then while the batches run.

Prints the single GETs' p50 / p99 / max (idle and during the batches), the same for the server's
event loop stalls (how late a 1 ms sleep in the server wakes up) and the batches' durations.
With `--deadline-ms N` every batch carries `deadline_ms` N, and the users each batch answered
with the deadline's fallback (X-Persona-Deadline-Fallbacks) are printed too.
Needs nothing outside the repository.

    .venv/bin/python -m benchmarks.batch_interleave [--batches 10] [--batch 1000] [--gap-ms 2]
        [--deadline-ms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.broker import free_port  # noqa: E402

SECRET = "bench-kkkkkkkkkkkkkkkkkkkkkkkk"
AUTH = {"Authorization": f"Bearer {SECRET}"}
T0 = 1_767_225_600_000
CACHED_ROUNDS = 5  # the first batch again, answered from the block cache
WARM_USERS = 200  # the single GETs' users (their blocks cached before measuring)
SLOW_MS = 10  # a single GET slower than this is counted
CONNECTIONS = 400  # the single GETs' connections at most (GETs due meanwhile queue for one)
CATALOG = ROOT / "persona" / "demo" / "catalog.jsonl.gz"


def build_app(users: int) -> Any:
    from api.app import create_app
    from api.auth import KeyRing
    from api.content import ContentService
    from api.testing import MemoryState
    from engine.blocks import BlockPolicy, Renderer
    from engine.events import validate
    from engine.sources import read_catalog
    from models.recs import Recommender
    from models.registry import ModelSet

    models = ModelSet.default()
    assert isinstance(models.recs, Recommender)  # the shipped model: its items are known
    state = MemoryState()
    for product in read_catalog(CATALOG):
        state.put_product(product)
    known = [i for i in models.recs.items if state.product(i) is not None]
    state.popular_items = [i for i in models.recs.popular if state.product(i) is not None]
    rng = random.Random(11)
    types = ("product_view", "product_view", "product_view", "add_to_cart", "purchase")
    for u in range(users):
        uid = f"u{u}"
        for n, kind in enumerate(types):
            state.apply(
                validate(
                    {
                        "event_id": f"{uid}-{n}",
                        "type": kind,
                        "user_id": uid,
                        "ts": T0 + u * 1000 + n * 60_000,
                        "item_id": rng.choice(known),
                        "quantity": 1,
                        "price": 9.5,
                        "currency": "GBP",
                    }
                )
            )
    content = ContentService(state, models, Renderer(), BlockPolicy())
    return create_app(content, KeyRing.from_settings(f"bench:{SECRET}:content:read", None))


def serve(port: int, users: int, ready: Any, phase: Any, stalls: Any) -> None:
    """The API on `port`; meanwhile the event loop's stalls (how late a 1 ms sleep wakes up)
    are recorded per `phase` (0: idle, 1: batches) and put on `stalls` once `phase` is 2."""
    from aiohttp import web

    from api.hot import HotRunner
    from persona.runtime import tune_gc

    app = build_app(users)
    tune_gc()  # as a reader does

    async def monitor() -> None:
        seen: dict[int, list[float]] = {0: [], 1: []}
        while phase.value < 2:
            now = phase.value
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            seen[now].append(time.perf_counter() - started - 0.001)
        stalls.put(seen)

    async def main() -> None:
        runner = HotRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await monitor()
        await asyncio.Event().wait()

    asyncio.run(main())


def fire_batches(
    base: str, first: int, batches: int, size: int, out: Any, deadline_ms: int | None = None
) -> None:
    """`batches` batches of uncached users, then the first one again CACHED_ROUNDS times (its
    blocks cached now); puts both lists of durations (seconds) on `out`, then the deadline
    fallbacks of each batch (with `deadline_ms`)."""

    async def main() -> tuple[list[float], list[float], list[int]]:
        took: tuple[list[float], list[float], list[int]] = ([], [], [])
        extra = {} if deadline_ms is None else {"deadline_ms": deadline_ms}
        headers = {**AUTH, "Content-Type": "application/msgpack", "Accept": "application/msgpack"}
        async with aiohttp.ClientSession() as session:
            for b in [*range(batches), *[0] * CACHED_ROUNDS]:
                ids = [f"u{first + b * size + i}" for i in range(size)]
                body = msgpack.packb({"block": "recommendations", "user_ids": ids, **extra})
                started = time.perf_counter()
                async with session.post(f"{base}/v1/blocks:batch", data=body, headers=headers) as r:
                    raw = await r.read()
                    assert r.status == 200, (r.status, raw[:200])
                    late = int(r.headers.get("X-Persona-Deadline-Fallbacks", "0"))
                took[len(took[0]) >= batches].append(time.perf_counter() - started)
                took[2].append(late)
        return took

    out.put(asyncio.run(main()))


async def singles(base: str, gap: float, until: Any) -> list[float]:
    """GET one cached block every `gap` seconds while `until()` is true, on a fixed schedule
    (a GET does not wait for the previous one to be answered: one stuck behind a batch does not
    hide the ones due meanwhile); each latency counts from the time the GET was due."""
    latencies: list[float] = []
    rng = random.Random(5)

    async def one(session: aiohttp.ClientSession, url: str, due: float) -> None:
        async with session.get(url, headers=AUTH) as r:
            await r.read()
            assert r.status == 200, r.status
        latencies.append(time.perf_counter() - due)

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        due = time.perf_counter()
        while until():
            url = f"{base}/v1/users/u{rng.randrange(WARM_USERS)}/blocks/recommendations"
            tasks.append(asyncio.create_task(one(session, url, due)))
            due += gap
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await asyncio.gather(*tasks)
    return latencies


def figures(label: str, latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    slow = sum(1 for x in ms if x > SLOW_MS)
    return (
        f"{label:20} n={len(ms):5}  p50 {statistics.median(ms):7.2f} ms  "
        f"p99 {p99:7.2f} ms  max {ms[-1]:7.2f} ms  over {SLOW_MS} ms: {slow}"
    )


def durations(label: str, seconds: list[float]) -> str:
    ms = sorted(t * 1000 for t in seconds)
    return (
        f"{label}: median {statistics.median(ms):.1f} ms, min {ms[0]:.1f} ms, "
        f"max {ms[-1]:.1f} ms ({len(ms)})"
    )


async def warm(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for u in range(WARM_USERS):
            url = f"{base}/v1/users/u{u}/blocks/recommendations"
            async with session.get(url, headers=AUTH) as r:
                await r.read()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--batch", type=int, default=1000, help="users per batch")
    p.add_argument("--gap-ms", type=float, default=2.0, help="pause between two single GETs")
    p.add_argument("--idle-seconds", type=float, default=3.0)
    p.add_argument("--deadline-ms", type=int, default=None, help="deadline_ms of every batch")
    args = p.parse_args()
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ready = ctx.Event()
    phase = ctx.Value("i", 0)
    stalls = ctx.Queue()
    users = WARM_USERS + args.batches * args.batch
    server = ctx.Process(target=serve, args=(port, users, ready, phase, stalls), daemon=True)
    started = time.perf_counter()
    server.start()
    try:
        if not ready.wait(600):
            raise SystemExit("the server did not start")
        print(f"{users:,} users loaded in {time.perf_counter() - started:.1f} s")
        asyncio.run(warm(base))
        deadline = time.perf_counter() + args.idle_seconds
        idle = asyncio.run(
            singles(base, args.gap_ms / 1000, lambda: time.perf_counter() < deadline)
        )
        out = ctx.Queue()
        batcher = ctx.Process(
            target=fire_batches,
            args=(base, WARM_USERS, args.batches, args.batch, out, args.deadline_ms),
        )
        phase.value = 1
        batcher.start()
        busy = asyncio.run(singles(base, args.gap_ms / 1000, batcher.is_alive))
        took = out.get(timeout=10)
        batcher.join()
        phase.value = 2
        lags = stalls.get(timeout=10)
    finally:
        server.terminate()
        server.join()
    print(f"single GETs of a cached block, one due every {args.gap_ms:g} ms:")
    print("  " + figures("idle", idle))
    print("  " + figures("during the batches", busy))
    print("the server's event loop: how late a 1 ms sleep woke up")
    print("  " + figures("idle", lags[0]))
    print("  " + figures("during the batches", lags[1]))
    print(durations(f"batches of {args.batch} uncached users (msgpack)", took[0]))
    print(durations(f"batches of {args.batch} cached users (msgpack)", took[1]))
    if args.deadline_ms is not None:
        late = took[2]
        print(
            f"deadline_ms {args.deadline_ms}: deadline fallbacks per uncached batch "
            f"{late[: args.batches]}, per cached batch {late[args.batches :]}"
        )


if __name__ == "__main__":
    main()
