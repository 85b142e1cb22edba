"""What a gzip bomb costs the API process: a `--compressed-kib` KiB gzip body that inflates to
`--inflated-mib` MiB (`[` and spaces), sent once to each of the routes below that take a body.

A fresh server process for each route serves the API (`api.app.create_app` over
`api.testing.MemoryState`, no catalog) with `HotRunner`, as a reader does; this process sends the
bomb and prints: the answer's status and how long it took, how much the server's peak resident
memory (VmHWM) grew over the request, and the server's CPU seconds from the request's start to
`--after` seconds after the answer (what it spends on the body after answering shows here:
aiohttp's lingering close read the rest of the body, inflating it).

Runs against whatever `api` is on PYTHONPATH, so the same command measures another checkout:

    PYTHONPATH=. .venv/bin/python -m benchmarks.encoded_bodies [--inflated-mib 1024] [--after 3]
    PYTHONPATH=/other/checkout .venv/bin/python benchmarks/encoded_bodies.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import socket
import time
import zlib
from typing import Any

SECRET = "bench-kkkkkkkkkkkkkkkkkkkkkkkk"
SCOPES = "content:read,events:write,events:collect"
ROUTES = ("/v1/events", "/v1/collect", "/v1/blocks:batch", "/v1/render")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve(port: int, ready: Any) -> None:
    from aiohttp import web

    from api.app import create_app
    from api.auth import KeyRing
    from api.content import ContentService
    from api.hot import HotRunner
    from api.testing import MemoryState
    from engine.blocks import BlockPolicy, Renderer
    from models.registry import ModelSet

    state = MemoryState()
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(f"bench:{SECRET}:{SCOPES}", None))

    async def main() -> None:
        runner = HotRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def bomb(inflated_mib: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    parts = [packer.compress(b"[")] + [packer.compress(block) for _ in range(inflated_mib)]
    return b"".join(parts) + packer.flush()


def figures(pid: int) -> tuple[int, float]:
    """(VmHWM in KiB, user + system CPU seconds) of process `pid`."""
    with open(f"/proc/{pid}/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return hwm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send(port: int, path: str, body: bytes) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {
        "Authorization": f"Bearer {SECRET}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    try:
        connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        raw = answer.read()
        text = raw[:80].decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            text = str(json.loads(raw).get("detail", text))[:80]
        return answer.status, text
    except OSError as exc:
        return 0, type(exc).__name__
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inflated-mib", type=int, default=1024)
    parser.add_argument("--after", type=float, default=3.0, help="seconds watched after")
    args = parser.parse_args()
    body = bomb(args.inflated_mib)
    print(f"bomb: {len(body):,} bytes of gzip inflating to {args.inflated_mib:,} MiB")
    for path in ROUTES:  # a fresh server for each: its peak memory is its own
        port = free_port()
        spawn = multiprocessing.get_context("spawn")
        ready = spawn.Event()
        server = spawn.Process(target=serve, args=(port, ready), daemon=True)
        server.start()
        ready.wait(60)
        assert server.pid is not None
        try:
            hwm_before, cpu_before = figures(server.pid)
            started = time.perf_counter()
            status, detail = send(port, path, body)
            took = time.perf_counter() - started
            time.sleep(args.after)
            hwm_after, cpu_after = figures(server.pid)
        finally:
            server.kill()
        print(
            f"POST {path}: {status} in {took:.2f} s ({detail}); server peak RSS "
            f"+{(hwm_after - hwm_before) / 1024:.0f} MiB (to {hwm_after / 1024:.0f} MiB), "
            f"CPU {cpu_after - cpu_before:.2f} s (to {args.after:.0f} s after the answer)"
        )


if __name__ == "__main__":
    main()
