"""Merchandising rules on a batch of blocks (engine/rules.py `apply_rules`): the CPU a
1000-recipient `POST /v1/blocks:batch` of personal blocks spends in the rules, which run on the
API's event loop. Each block is what the serving path does per recipient: the rules live for the
block now (`Rules.live`, as `api.content.ContentService._rules`) and `apply_rules` over the
block's candidates (`--width` candidates for `--items` shown, engine/blocks.py `RULES_WIDTH`),
with a `may_show` as engine/blocks.py's `_ruled` builds it, against a catalog of `--products`
synthetic products (`benchmarks.scale`). The documents are the hostile probe's
(tests/api/test_hostile_batch_rules.py `costly_rules`), at the bounds `parse_rules` accepts:

- `none`: no rules;
- `pin`: one pin listing 1000 items and 9 exclude rules (10 rules: 10,000 pin checks, the most a
  document may cost), every product excluded: the pin tries each listed item;
- `excludes`: 499 exclude rules, every product excluded by the last.

Prints milliseconds per `--blocks` blocks for each, the best of `--rounds`.

    .venv/bin/python -m benchmarks.rules_batch [--blocks 1000] [--products 5000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from benchmarks.scale import products
from engine.catalog import Product
from engine.rules import Rules, apply_rules, parse_rules

NOW = 1_790_000_000_000
BLOCK = "recommendations"


def document(pins: int, excludes: int, listed: list[str]) -> Rules:
    """As the probe's `costly_rules`: exclude rules by brands no product has, one more that
    excludes every product (`min_price` 0), and pins at position 1 listing `listed`."""
    rules: list[dict[str, Any]] = [
        {"id": f"x{n}", "action": "exclude", "match": {"brand": f"none{n}"}}
        for n in range(excludes)
    ]
    rules.append({"id": "all", "action": "exclude", "match": {"min_price": 0}})
    rules += [
        {"id": f"p{n}", "action": "pin", "position": 1, "match": {"item_ids": listed}}
        for n in range(pins)
    ]
    return parse_rules({"version": "1", "rules": rules})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--blocks", type=int, default=1000)
    p.add_argument("--products", type=int, default=5000)
    p.add_argument("--items", type=int, default=6, help="items a block shows")
    p.add_argument("--width", type=int, default=3, help="candidates per shown item")
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    catalog: dict[str, Product] = {product.item_id: product for product in products(args.products)}
    ids = list(catalog)
    rng = random.Random(7)
    blocks = [rng.sample(ids, args.items * args.width) for _ in range(args.blocks)]
    held = [frozenset(rng.sample(ids, 5)) for _ in range(args.blocks)]
    listed = rng.sample(ids, 1000)
    documents = {
        "none": Rules("0"),
        "pin": document(1, 8, listed),
        "excludes": document(0, 498, listed),
    }
    lookup = catalog.get
    print(
        f"{args.blocks} blocks of {args.items} items from {args.items * args.width} candidates, "
        f"catalog of {len(catalog):,} products; best of {args.rounds} round(s)"
    )
    for name, rules in documents.items():
        best = float("inf")
        for _ in range(args.rounds):
            started = time.process_time()
            for candidates, bought in zip(blocks, held, strict=True):

                def may_show(item_id: str, bought: frozenset[str] = bought) -> bool:
                    product = lookup(item_id)
                    if product is None or item_id in bought:
                        return False
                    return product.purchasable

                live = list(rules.live(BLOCK, NOW)) if rules.rules else []
                apply_rules(candidates, lookup, live, args.items, may_show)
            best = min(best, time.process_time() - started)
        print(
            f"  {name:9} {len(rules.rules):4} rules  "
            f"{best * 1000 / args.blocks * 1000:9.1f} ms CPU per 1000 blocks"
        )


if __name__ == "__main__":
    main()
