"""Whether the serving processes' memory levels off under senders' load: against a running
`persona run` (e.g. `persona run --demo` with PERSONA_READERS=2), sends rounds of send-time
batches (`POST /v1/blocks:batch`, 1000 recipients each: half known users, half ids never seen,
new ones every round; html/json, JSON/msgpack answers, some with `deadline_ms`, some with a
parameter set among `n`, `category`, `exclude`, `locale`) while events stream in at `--rate`
events/s, and after each round prints every worker's and reader's RSS and VmHWM (MB, from
/proc) and the content caches' entries and accounted bytes /metrics reports (of the reader that
answered the scrape).

    PYTHONPATH=. .venv/bin/python -m benchmarks.serving_memory --base http://127.0.0.1:8080 \
        --key SECRET --users 12748,14096,... [--rounds 10] [--batches 20] [--rate 1000]

The processes are found as the `persona worker` / `persona reader` children of `--run-pid`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import re
import time
import uuid
from pathlib import Path

import aiohttp

PARAMS: list[dict[str, object]] = [
    {},
    {"n": 3},
    {"n": 12},
    {"category": "Globe"},
    {"exclude": "85123A,22423"},
    {"locale": "de-DE"},
    {"n": 4, "locale": "fr-FR"},
]


def children(run_pid: int) -> dict[str, int]:
    """The worker's and readers' pids under `run_pid`, named worker, reader0, reader1, ..."""
    found: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != run_pid or b"persona" not in cmd:
            continue
        if b"worker" in cmd:
            found["worker"] = int(proc.name)
        elif b"reader" in cmd:
            found[f"reader{cmd[cmd.index(b'--index') + 1].decode()}"] = int(proc.name)
    return dict(sorted(found.items()))


def status_mb(pid: int) -> tuple[float, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    return rss / 1024, hwm / 1024


async def stream_events(
    session: aiohttp.ClientSession, base: str, users: list[str], rate: float, stop: asyncio.Event
) -> int:
    sent = 0
    items = ["85123A", "22423", "47566", "84879", "20725", "22720", "21212", "23084"]
    ts = int(time.time() * 1000)
    while not stop.is_set():
        events = [
            {
                "event_id": uuid.uuid4().hex,
                "type": "product_view",
                "user_id": random.choice(users),
                "ts": ts,
                "item_id": random.choice(items),
            }
            for _ in range(max(1, int(rate / 10)))
        ]
        async with session.post(f"{base}/v1/events", json=events) as answer:
            await answer.read()
        sent += len(events)
        await asyncio.sleep(0.1)
    return sent


async def one_round(
    session: aiohttp.ClientSession, base: str, users: list[str], batches: int, rnd: int
) -> tuple[int, int]:
    ok = errors = 0
    for b in range(batches):
        known = random.sample(users, min(500, len(users)))
        unknown = [f"r{rnd}-b{b}-{uuid.uuid4().hex[:12]}" for _ in range(1000 - len(known))]
        body: dict[str, object] = {
            "block": random.choice(["recommendations", "cart_reminder", "winback"]),
            "format": random.choice(["html", "json"]),
            "user_ids": known + unknown,
        }
        body.update(PARAMS[(rnd + b) % len(PARAMS)])
        if b % 3 == 0:
            body["deadline_ms"] = 2000
        accept = "application/msgpack" if b % 2 else "application/json"
        async with session.post(
            f"{base}/v1/blocks:batch", json=body, headers={"Accept": accept}
        ) as answer:
            await answer.read()
            if answer.status == 200:
                ok += 1
            else:
                errors += 1
    return ok, errors


async def cache_entries(session: aiohttp.ClientSession, base: str) -> str:
    async with session.get(f"{base}/metrics") as answer:
        text = await answer.text()
    return " ".join(
        f"{m.group(1)}={float(m.group(2)):.0f}"
        for m in re.finditer(
            r"^(persona_(?:block_cache_entries|cache_(?:entries|bytes))\S*) (\S+)$", text, re.M
        )
    )


async def main_async(args: argparse.Namespace) -> None:
    users = args.users.split(",")
    headers = {"Authorization": f"Bearer {args.key}"}
    pids = children(args.run_pid)
    print("processes:", pids, flush=True)

    def line(label: str) -> str:
        return (
            " ".join(
                f"{name} {rss:.0f}/{hwm:.0f}"
                for name, (rss, hwm) in ((n, status_mb(p)) for n, p in pids.items())
            )
            + f"  ({label}; RSS/VmHWM MB)"
        )

    print(line("start"), flush=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        stop = asyncio.Event()
        streamer = asyncio.create_task(stream_events(session, args.base, users, args.rate, stop))
        for rnd in itertools.count(1):
            if rnd > args.rounds:
                break
            started = time.monotonic()
            ok, errors = await one_round(session, args.base, users, args.batches, rnd)
            took = time.monotonic() - started
            entries = await cache_entries(session, args.base)
            print(line(f"round {rnd}: {ok} ok, {errors} not, {took:.0f} s; {entries}"), flush=True)
        stop.set()
        print("events sent:", await streamer, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--run-pid", type=int, required=True)
    parser.add_argument("--users", required=True, help="known user ids, comma-separated")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1000.0)
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
