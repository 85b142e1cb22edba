"""Content similarity (engine/similarity.py): memory per product, indexing and top-k cost, and
what blending it costs a recommendation (models/similar.py). Figures, not assertions.

python -m benchmarks.content_similarity [N_PRODUCTS ...]    (default: 10000 100000)

- the demo catalog (UCI titles, ~3,900 products) and synthetic catalogs of N products: Zipf
  distributed title words (a 20,000-word vocabulary, 3-8 words a title), categories (N / 200)
  and brands (N / 50), log-normal prices;
- bytes per product: tracemalloc's count of everything the index allocated, divided by N;
- `similar(item, 10)` latency over 2,000 random products (p50, p99), and memoized (median);
- `put` per product, measured while tracemalloc traces (which slows it several times);
- on the demo catalog with the default model: `recommend` alone against `recommend` + `blend`
  for histories of 10 known items with and without one product the model has not seen.
"""

from __future__ import annotations

import itertools
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

from engine.catalog import Product
from engine.similarity import ContentIndex
from engine.sources import read_catalog
from models.registry import ModelSet
from models.similar import blend
from persona.supervisor import DEMO_DIR

QUERIES = 2_000


def synthetic(n: int, seed: int = 0) -> list[Product]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(20_000)]
    word_cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(words))))
    categories = [f"category {i}" for i in range(max(1, n // 200))]
    category_cum = list(itertools.accumulate(1.0 / (c + 1) for c in range(len(categories))))
    brands = [f"brand {i}" for i in range(max(1, n // 50))]
    out = []
    for i in range(n):
        title = " ".join(rng.choices(words, cum_weights=word_cum, k=rng.randint(3, 8)))
        out.append(
            Product(
                item_id=f"p{i}",
                title=title,
                url="https://shop.example/p",
                image_url="https://shop.example/i.jpg",
                price=round(rng.lognormvariate(3.0, 1.0), 2),
                currency="EUR",
                category=rng.choices(categories, cum_weights=category_cum)[0],
                brand=rng.choice(brands),
            )
        )
    return out


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure(label: str, products: list[Product]) -> ContentIndex:
    tracemalloc.start()
    index = ContentIndex()
    started = time.perf_counter()
    for p in products:
        index.put(p)
    build = time.perf_counter() - started
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    ids = [p.item_id for p in products]
    rng = random.Random(1)
    queries = [rng.choice(ids) for _ in range(QUERIES)]
    every = lambda _item: True  # noqa: E731 (an `accept`: bypasses the memo)
    cold = sorted(timed(lambda q=q: index.similar(q, 10, accept=every)) for q in queries)
    for q in queries:
        index.similar(q, 10)
    warm = statistics.median(timed(lambda q=q: index.similar(q, 10)) for q in queries)
    p50, p99 = cold[len(cold) // 2], cold[int(len(cold) * 0.99)]
    print(
        f"{label:26} {len(index):>7,} products {size / len(index):>5,.0f} B/product  "
        f"put {build / len(products) * 1e6:5.0f} us (traced)  similar(10) p50 {p50 * 1e3:5.2f} ms"
        f"  p99 {p99 * 1e3:5.2f} ms  memoized {warm * 1e6:4.1f} us"
    )
    return index


def blend_cost(index: ContentIndex, catalog: list[Product]) -> None:
    recs = ModelSet.default().recs
    known = [i for i in getattr(recs, "items", []) if i in index][:2_000]
    unseen = Product("unseen-1", "White hanging heart lantern", "https://s.e/p", "https://s.e/i",
                     3.0, "GBP", category="Holder")  # fmt: skip
    index.put(unseen)
    rng = random.Random(2)
    cases = [
        [(item, 1_000 - n) for n, item in enumerate(rng.sample(known, 10))] for _ in range(500)
    ]
    in_stock = {p.item_id for p in catalog} | {unseen.item_id}
    allowed = in_stock.__contains__

    def score(with_blend: bool, with_unseen: bool) -> float:
        def run() -> None:
            for history in cases:
                recent = [(unseen.item_id, 2_000), *history] if with_unseen else history
                exclude = {i for i, _ in recent}
                ranked = recs.recommend(recent, exclude, 20, allowed)
                if with_blend:
                    blend(ranked, recent, recs, index, exclude, allowed, 20)

        return timed(run) / len(cases) * 1e3

    base = statistics.median(score(False, False) for _ in range(3))
    for label, unseen_too in (("10 known items", False), ("10 known + 1 unseen", True)):
        alone = statistics.median(score(False, unseen_too) for _ in range(3))
        both = statistics.median(score(True, unseen_too) for _ in range(3))
        print(
            f"recommend, {label:22} {alone:6.2f} ms alone, {both:6.2f} ms with blend "
            f"({both / alone:4.2f}x; baseline 10 known alone {base:5.2f} ms)"
        )


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    demo = list(read_catalog(DEMO_DIR / "catalog.jsonl.gz"))
    index = measure("demo catalog (UCI titles)", demo)
    for n in sizes:
        measure(f"synthetic {n:,}", synthetic(n))
    blend_cost(index, demo)


if __name__ == "__main__":
    main()
