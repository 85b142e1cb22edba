"""What gzip costs and saves on the large send-time answers: a 1000-recipient
`POST /v1/blocks:batch` (HTML recommendations, JSON and msgpack) and a 1000-recipient
`POST /v1/render` of a small e-mail template using `{{ blocks.recommendations }}`.

The answers are built in this process exactly as the handlers build them (`api.batch`'s
`encode_results` over `ContentService.blocks`, `api.render.render_one` and `api.batch.respond`),
over the demo catalog and the shipped models with `--users` shoppers
(`benchmarks.batch_interleave.build_app`), each user uncached, so the render cost printed is the
uncached one. Then each answer is gzipped at levels 1, 6 (zlib's default, what aiohttp's
`enable_compression` uses) and 9: the size, the ratio and the CPU time of the compression (best
of `--rounds`, `time.process_time`), and that time as a share of the answer's render time.

    .venv/bin/python -m benchmarks.batch_compression [--users 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from benchmarks.batch_interleave import build_app

LEVELS = (1, 6, 9)
TEMPLATE = (
    "<html><body><h1>Hello {{ user.first_name }}</h1><p>Picked for you:</p>"
    "{{ blocks.recommendations }}<p>Thanks for shopping with us.</p></body></html>"
)


def best(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    """(the least CPU seconds of `rounds` calls of `fn`, its last result)."""
    took, result = float("inf"), None
    for _ in range(rounds):
        started = time.process_time()
        result = fn()
        took = min(took, time.process_time() - started)
    return took, result


def answers(users: int) -> dict[str, tuple[bytes, float]]:
    """{name: (the answer's bytes, the CPU seconds to render it uncached)}."""
    from api.batch import encode_results
    from api.render import ENV, render_one
    from api.shared import CONTENT
    from engine.params import NO_PARAMS
    from engine.sandbox import MESSAGE_LIMITS, REQUEST_LIMITS, RequestBudget

    app = build_app(users)
    content = app[CONTENT]
    ids = [f"u{u}" for u in range(users)]
    out: dict[str, tuple[bytes, float]] = {}
    started = time.process_time()
    blocks = content.blocks(ids, "recommendations", "html", NO_PARAMS)
    rendered = time.process_time() - started
    for name, packed in (("batch html json", False), ("batch html msgpack", True)):
        out[name] = (encode_results(ids, blocks, packed), rendered)

    budget = RequestBudget(MESSAGE_LIMITS, REQUEST_LIMITS, 60.0)
    template = ENV.from_string(TEMPLATE)
    app = build_app(users)  # a fresh one: no block cached by the batch above
    content = app[CONTENT]
    started = time.process_time()
    results = {}

    async def render_all() -> None:
        for uid in ids:
            results[uid], _ = await render_one(
                template, content, uid, {"first_name": "Ada"}, budget, NO_PARAMS, []
            )

    asyncio.run(render_all())
    rendered = time.process_time() - started
    body = json.dumps({"results": results, "errors": 0}, ensure_ascii=False, separators=(",", ":"))
    out["render json"] = (body.encode(), rendered)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for name, (body, rendered) in answers(args.users).items():
        print(f"{name}: {len(body):,} bytes, rendered uncached in {rendered * 1000:.0f} ms CPU")
        for level in LEVELS:
            took, packed = best(partial(gzip.compress, body, level, mtime=0), args.rounds)
            print(
                f"  gzip -{level}: {len(packed):,} bytes ({len(packed) / len(body):.1%}), "
                f"{took * 1000:.1f} ms CPU ({took / rendered:.1%} of the render), "
                f"{len(body) / took / 1e6:.0f} MB/s"
            )


if __name__ == "__main__":
    main()
