"""How fast a product feed is made and served: the figures behind PERSONA_FEED_TIMEOUT's default.

Writes `--products` products (realistic fields: a 300-character description, brand, category,
GTIN, a sale) into a worker's catalog tables (RocksDB, as the worker stores them), reads them as
a reader does (streams.readers.SecondaryState), then for each feed:

- generate: the rows made from the catalog iterator, encoded, nothing sent (products/s, MB/s);
- http: `GET /v1/feeds/{name}` from a reader's app (api.hot.HotRunner) on loopback, read as fast
  as the client can, with `Accept-Encoding: gzip` (what ad platforms send) and without.

and prints the seconds a 1,000,000-product feed would take at each rate, and the link speed under
which such a feed would not fit in the default deadline (PERSONA_FEED_TIMEOUT). The synthetic
products repeat their text, so gzip shrinks them far more than a real catalog's (count on 5-10x).

    python -m benchmarks.feed_rate [--products 100000] [--feeds google.tsv,google.xml]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from rocksdict import Options, Rdict

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.hot import HotRunner
from api.limits import ServingOptions
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.feeds import FEEDS, Channel, stream
from engine.settings import Settings
from models.registry import ModelSet
from streams.readers import OFFSET_KEY, TABLES, SecondaryState, table_dir

PARTITIONS = 8
SECRET = "bench-feeds-secret-0123456789"
MILLION = 1_000_000


def product(n: int) -> Product:
    item = f"sku-{n:07d}"
    url = f"https://shop.example.com/products/{item}"
    return Product(
        item,
        f"Brass desk lamp {n} with a linen shade",
        url,
        f"https://cdn.shop.example.com/images/{item}.jpg",
        49.9,
        "EUR",
        category="Home > Lighting > Desk lamps",
        brand="Lumen & Co",
        description=("A warm brass desk lamp with a soft linen shade, dimmable. " * 6)[:300],
        sale_price=39.9,
        gtin=f"{4006381333931 + n}",
        mpn=f"LMP-{n}",
    )


def write_catalog(data_dir: Path, products: int) -> None:
    directory = table_dir(data_dir)
    directory.mkdir(parents=True)
    dbs = {}
    for name in TABLES:
        for p in range(PARTITIONS):
            options = Options(raw_mode=True)
            options.create_if_missing(True)
            db = Rdict(str(directory / f"{name}-{p}.db"), options)
            db[OFFSET_KEY] = b"1"
            dbs[(name, p)] = db
    for n in range(products):
        item = product(n)
        dbs[("catalog", n % PARTITIONS)][item.item_id.encode()] = item.pack()
    for db in dbs.values():
        db.close()


def generate(state: SecondaryState, name: str) -> tuple[float, int]:
    started = time.perf_counter()
    size = 0
    for chunk in stream(name, state.products(), channel=Channel(now_ms=int(time.time() * 1000))):
        size += len(chunk.encode())
    return time.perf_counter() - started, size


async def over_http(state: SecondaryState, name: str, gzip: bool) -> tuple[float, int]:
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(
        content, KeyRing.from_settings(f"bench:{SECRET}:feeds:read", None), ServingOptions()
    )
    runner = HotRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    headers = {
        "Authorization": f"Bearer {SECRET}",
        "Accept-Encoding": "gzip" if gzip else "identity",
    }
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            started = time.perf_counter()
            url = f"http://127.0.0.1:{port}/v1/feeds/{name}"
            async with session.get(url, headers=headers) as r:
                assert r.status == 200, r.status
                size = 0
                async for block in r.content.iter_chunked(1 << 16):
                    size += len(block)
            return time.perf_counter() - started, size
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--feeds", default=",".join(FEEDS))
    args = parser.parse_args()
    deadline = Settings().feed_timeout
    with tempfile.TemporaryDirectory(prefix="persona-feed-rate-") as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        write_catalog(data_dir, args.products)
        print(f"catalog: {args.products} products written in {time.perf_counter() - started:.1f} s")
        state = SecondaryState(data_dir, PARTITIONS, data_dir / "secondary")
        state.refresh()
        print(
            f"{'feed':<12} {'how':<14} {'seconds':>8} {'products/s':>11} {'MB':>8} "
            f"{'1M: s':>7} {'1M: MB':>8}"
        )
        for name in args.feeds.split(","):
            runs = [("generate", generate(state, name))]
            runs.append(("http identity", asyncio.run(over_http(state, name, gzip=False))))
            runs.append(("http gzip", asyncio.run(over_http(state, name, gzip=True))))
            for how, (seconds, size) in runs:
                rate = args.products / seconds
                million_mb = size * MILLION / args.products / 1e6
                print(
                    f"{name:<12} {how:<14} {seconds:>8.2f} {rate:>11,.0f} {size / 1e6:>8.1f} "
                    f"{MILLION / rate:>7.0f} {million_mb:>8.0f}"
                )
                if how.startswith("http"):
                    link = million_mb * 8 / deadline
                    print(
                        f"{'':<12} {'':<14} 1M products fit in {deadline:g} s on links of "
                        f"{link:.1f} Mbit/s or more"
                    )
        asyncio.run(state.stop())


if __name__ == "__main__":
    main()
