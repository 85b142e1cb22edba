"""What keeping e-mail blocks within SMTP's line limit costs (engine/email_lines.py `wrap_html`,
engine/blocks.py `fits_email`): `--blocks` e-mail blocks of 6 items (recommendations, the
fallback grid an unknown user gets) rendered over three catalogs:

- `plain`: benchmarks.scale's products (short titles and links): no line reaches the target;
- `shop`: titles of 60 to 140 characters and links of 120 to 220 with a query string, as a
  real shop's: the item lines reach the target and are broken;
- `hostile`: titles of 500 characters (one word, escaped characters, CJK with spaces) and links
  of 450 characters with `&` (650 octets written): item lines are broken, several times.

For each: milliseconds per `--blocks` blocks for `wrap_html` alone (on the blocks' HTML before
it), for `fits_email` over the blocks' items, and for the whole render (`assemble`), the best of
`--rounds`.

    .venv/bin/python -m benchmarks.email_lines [--blocks 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from benchmarks.scale import products
from engine import blocks
from engine.blocks import BlockInput, BlockPolicy, Renderer, assemble, fits_email
from engine.catalog import Product
from engine.email_lines import longest_line, wrap_html
from engine.params import build

ITEMS = 6


def plain(n: int) -> list[Product]:
    return list(products(n))


def shop(n: int) -> list[Product]:
    rng = random.Random(5)
    words = ("scented", "candle", "soy", "wax", "large", "gift", "set", "lavender", "oak", "mug")
    out = []
    for i, p in enumerate(products(n)):
        title = " ".join(rng.choice(words) for _ in range(40))[: rng.randint(60, 140)]
        query = "?utm_source=feed&utm_medium=email&variant=" + "x" * rng.randint(40, 130)
        url = f"https://www.shop.example.com/collections/home/products/item-{i}{query}"
        image = f"https://cdn.shop.example.com/s/files/1/0000/{i}/products/{i}.jpg?v=1712345678"
        out.append(Product(p.item_id, title.strip(), url, image, p.price, "GBP"))
    return out


def hostile(n: int) -> list[Product]:
    titles = [
        ("Superkalifragilistisch" * 23)[:500],
        ('Tom & Jerry "XL" <set> ' * 30)[:500],
        "日本製の陶器 " * 50,
        ("A scented candle of soy wax " * 20)[:500],
    ]
    query = "?" + "&".join(f"k{k}=v{k}" for k in range(100))
    out = []
    for i, p in enumerate(products(n)):
        url = (f"https://shop.example.com/p/{i}" + query)[:450]
        out.append(Product(p.item_id, titles[i % 4], url, p.image_url, p.price, "GBP"))
    return out


def best(rounds: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def measure(name: str, catalog: list[Product], count: int, rounds: int) -> None:
    lookup = {p.item_id: p for p in catalog}.get
    renderer = Renderer()
    inputs = [
        BlockInput(
            block="recommendations",
            fmt="html",
            user_id="u",
            profile=None,
            churn=None,
            recommendations=[],
            models={},
            params=build({"n": ITEMS}),
            popular=[catalog[(b * ITEMS + k) % len(catalog)].item_id for k in range(ITEMS)],
        )
        for b in range(count)
    ]
    wrapped = wrap_html
    setattr(blocks, "wrap_html", lambda html: html)  # noqa: B010 (the HTML before wrapping)
    try:
        unwrapped = [assemble(inp, lookup, BlockPolicy(), renderer).content for inp in inputs]
        render_without = best(
            rounds, lambda: [assemble(i, lookup, BlockPolicy(), renderer) for i in inputs]
        )
    finally:
        setattr(blocks, "wrap_html", wrapped)  # noqa: B010
    wrap_ms = best(rounds, lambda: [wrap_html(html) for html in unwrapped])
    shown = [lookup(i) for inp in inputs for i in inp.popular]
    fits_ms = best(rounds, lambda: [fits_email(p) for p in shown if p is not None])
    render_with = best(
        rounds, lambda: [assemble(i, lookup, BlockPolicy(), renderer) for i in inputs]
    )
    longest = max(longest_line(h) for h in unwrapped)
    after = max(longest_line(wrap_html(h)) for h in unwrapped)
    print(
        f"{name:8} longest line {longest:5} -> {after:4} octets | per {count} blocks: "
        f"wrap_html {wrap_ms:7.1f} ms, fits_email {fits_ms:5.1f} ms, "
        f"render {render_without:7.1f} -> {render_with:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for name, make in (("plain", plain), ("shop", shop), ("hostile", hostile)):
        measure(name, make(args.blocks * ITEMS), args.blocks, args.rounds)


if __name__ == "__main__":
    main()
