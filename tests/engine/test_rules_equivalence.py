"""`apply_rules` (engine/rules.py) gives what its straightforward implementation (as it was at
commit 30d4403, copied here as the reference) gives, item for item and fired id for fired id,
over randomized documents (every action; item ids, category, brand, price and availability
matches; time windows and blocks through `Rules.live`), candidates (unknown and out-of-stock
products among them), `k` and `may_show`; and `Rules.live` gives what a scan of the document
gives at every time."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from engine.catalog import Product
from engine.rules import RULE_BLOCKS, Applied, Match, Rule, Rules, apply_rules, parse_rules

NOW = 1_790_000_000_000
HOUR = 3_600_000
CASES = 600

# -- the reference: engine/rules.py's application at commit 30d4403 --------------------------

Catalog = Callable[[str], Product | None]


def ref_apply(
    candidates: Sequence[str],
    catalog: Catalog,
    rules: list[Rule],
    k: int,
    may_show: Callable[[str], bool] | None = None,
) -> Applied:
    if not rules:
        return Applied(list(candidates[:k]), [])
    if may_show is not None:
        catalog = ref_only(catalog, set(candidates), may_show)
    products = {item: catalog(item) for item in candidates}
    kept = [item for item in candidates if ref_showable(products[item])]
    fired: set[str] = set()
    kept = ref_exclude(kept, products, rules, fired)
    kept = ref_filter(kept, products, rules, fired)
    kept = ref_weigh(kept, products, rules, fired)
    out = ref_pin(kept, catalog, rules, k, fired)
    return Applied(out, [rule.id for rule in rules if rule.id in fired])


def ref_only(catalog: Catalog, candidates: set[str], may_show: Callable[[str], bool]) -> Catalog:
    def lookup(item: str) -> Product | None:
        return catalog(item) if item in candidates or may_show(item) else None

    return lookup


def ref_showable(product: Product | None) -> bool:
    return product is not None and product.availability != "out_of_stock"


def ref_exclude(
    items: list[str], products: dict[str, Product | None], rules: list[Rule], fired: set[str]
) -> list[str]:
    out = []
    for item in items:
        hits = [r.id for r in rules if r.action == "exclude" and ref_hit(r, products[item])]
        fired.update(hits)
        if not hits:
            out.append(item)
    return out


def ref_filter(
    items: list[str], products: dict[str, Product | None], rules: list[Rule], fired: set[str]
) -> list[str]:
    filters = [r for r in rules if r.action == "filter"]
    out = [item for item in items if all(ref_hit(r, products[item]) for r in filters)]
    if len(out) < len(items):
        fired.update(r.id for r in filters if any(not ref_hit(r, products[i]) for i in items))
    return out


def ref_weigh(
    items: list[str], products: dict[str, Product | None], rules: list[Rule], fired: set[str]
) -> list[str]:
    weights = [r for r in rules if r.action in ("boost", "bury")]
    if not weights:
        return items
    scores = {}
    for rank, item in enumerate(items):
        score = 1.0 / (1 + rank)
        for rule in weights:
            if ref_hit(rule, products[item]):
                score *= rule.weight
        scores[item] = score
    out = sorted(items, key=lambda item: -scores[item])
    if out != items:
        moved = {item for item, before in zip(out, items, strict=True) if item != before}
        fired.update(r.id for r in weights if any(ref_hit(r, products[i]) for i in moved))
    return out


def ref_pin(
    items: list[str], catalog: Catalog, rules: list[Rule], k: int, fired: set[str]
) -> list[str]:
    out = list(items)
    pins = sorted((r for r in rules if r.action == "pin"), key=lambda r: r.position or 1)
    placed: set[str] = set()
    for rule in pins:
        item = ref_pinned(rule, out, catalog, rules, placed)
        if item is None:
            continue
        at = min((rule.position or 1) - 1, k - 1, len(out))
        before = out.index(item) if item in out else None
        if item in out:
            out.remove(item)
        out.insert(min(at, len(out)), item)
        placed.add(item)
        if before != out.index(item):
            fired.add(rule.id)
    return out[:k]


def ref_pinned(
    rule: Rule, items: list[str], catalog: Catalog, rules: list[Rule], placed: set[str]
) -> str | None:
    def eligible(item: str) -> bool:
        product = catalog(item)
        return item not in placed and ref_hit(rule, product) and ref_allowed(product, rules)

    if rule.match.item_ids is not None:
        listed = sorted(rule.match.item_ids, key=lambda i: (i not in items, i))
        return next((item for item in listed if eligible(item)), None)
    return next((item for item in items if eligible(item)), None)


def ref_allowed(product: Product | None, rules: list[Rule]) -> bool:
    excluded = any(r.action == "exclude" and ref_hit(r, product) for r in rules)
    return not excluded and all(ref_hit(r, product) for r in rules if r.action == "filter")


def ref_hit(rule: Rule, product: Product | None) -> bool:
    return ref_showable(product) and product is not None and ref_matches(rule.match, product)


def ref_matches(match: Match, product: Product) -> bool:
    checks = (
        match.item_ids is None or product.item_id in match.item_ids,
        match.category is None or ref_under(product.category, match.category),
        match.brand is None or product.brand.casefold() == match.brand,
        match.min_price is None or product.price >= match.min_price,
        match.max_price is None or product.price <= match.max_price,
        match.availability is None or product.availability == match.availability,
    )
    return all(checks)


def ref_under(category: str, wanted: str) -> bool:
    have = category.casefold()
    return have == wanted or have.startswith(wanted + " > ")


# -- randomized shops, documents and blocks -----------------------------------------------------

CATEGORIES = [
    "Home",
    "Home > Candles",
    "home > candles > Tea lights",
    "HOME > Lamps",
    "Homeware",
    "Garden",
    "Garden > Home",
    " > Odd",
    "Odd >  > Gaps",
    "",
]
WANTED = ["home", "Home > Candles", "home > candles > tea lights", "garden", "odd", "lamps", "x"]
BRANDS = ["Acme", "ACME", "acme ", "Other", "Zed", ""]
PRICES = [0.0, 2.5, 5.0, 10.0, 10.5, 50.0, 199.99]
AVAILABILITY = ["in_stock", "in_stock", "in_stock", "preorder", "out_of_stock"]


def shop(rng: random.Random) -> dict[str, Product]:
    out = {}
    for n in range(rng.randint(5, 40)):
        i = f"i{n}"
        out[i] = Product(
            i,
            f"Item {i}",
            f"https://shop.example/p/{i}",
            f"https://shop.example/i/{i}.jpg",
            rng.choice(PRICES),
            "GBP",
            rng.choice(AVAILABILITY),
            category=rng.choice(CATEGORIES),
            brand=rng.choice(BRANDS),
        )
    if rng.random() < 0.2:  # a product whose id is not the key it is found under
        key = rng.choice(list(out))
        out[key] = Product(
            key + "-x", "Moved", "https://s.example/m", "https://s.example/m.jpg", 1.0, "GBP"
        )
    return out


def match(rng: random.Random, ids: list[str]) -> dict[str, Any]:
    fields = rng.sample(
        ["item_ids", "category", "brand", "min_price", "max_price", "availability"],
        rng.choice([1, 1, 1, 2, 2, 3]),
    )
    out: dict[str, Any] = {}
    for name in fields:
        if name == "item_ids":
            out[name] = rng.sample(ids, rng.randint(1, min(len(ids), 12)))
        elif name == "category":
            out[name] = rng.choice(WANTED)
        elif name == "brand":
            out[name] = rng.choice(["acme", "Other", "zed", "nobody"])
        elif name == "availability":
            out[name] = rng.choice(["in_stock", "out_of_stock", "preorder"])
    low = rng.choice(PRICES)
    if "min_price" in fields:
        out["min_price"] = low
    if "max_price" in fields:
        out["max_price"] = max(low, rng.choice(PRICES)) if "min_price" in fields else low
    return out


def rule(rng: random.Random, n: int, ids: list[str]) -> dict[str, Any]:
    action = rng.choice(["exclude", "filter", "boost", "bury", "pin", "pin", "boost"])
    out: dict[str, Any] = {"id": f"r{n}", "action": action, "match": match(rng, ids)}
    if action == "pin":
        out["position"] = rng.randint(1, 9)
        if rng.random() < 0.5:  # pins mostly list their items
            out["match"] = {"item_ids": rng.sample(ids, rng.randint(1, min(len(ids), 15)))}
    if action == "boost" and rng.random() < 0.7:
        out["weight"] = rng.choice([1.5, 2, 3, 4, 10, 100])
    if action == "bury" and rng.random() < 0.7:
        out["weight"] = rng.choice([0.1, 0.25, 0.5, 0.9])
    if rng.random() < 0.2:
        out["blocks"] = rng.sample(RULE_BLOCKS, rng.randint(1, 2))
    if rng.random() < 0.3:
        out["starts"] = NOW + rng.randint(-3, 2) * HOUR
    if rng.random() < 0.3:
        out["ends"] = out.get("starts", NOW - 4 * HOUR) + rng.randint(1, 4) * HOUR
    return out


def case(seed: int) -> tuple[list[str], dict[str, Product], Rules, str, int]:
    rng = random.Random(seed)
    catalog = shop(rng)
    ids = [*catalog, "unknown-1", "unknown-2"]
    many = rng.random() < 0.1  # now and then a long document
    rules = [rule(rng, n, ids) for n in range(rng.randint(0, 60 if many else 12))]
    doc = parse_rules({"version": str(seed), "rules": rules})
    candidates = rng.sample(ids, rng.randint(0, min(len(ids), 18)))
    if candidates and rng.random() < 0.1:
        candidates.append(rng.choice(candidates))  # a duplicate
    now = NOW + rng.choice([-4, -3, -2, -1, 0, 0, 1, 2, 3]) * HOUR + rng.choice([-1, 0, 0, 1])
    return candidates, catalog, doc, rng.choice(RULE_BLOCKS), now


@pytest.mark.parametrize("chunk", range(6))
def test_apply_rules_gives_what_the_reference_gives(chunk: int) -> None:
    fired = pinned = 0
    for seed in range(chunk * CASES // 6, (chunk + 1) * CASES // 6):
        candidates, catalog, doc, block, now = case(seed)
        rng = random.Random(-seed)
        live = doc.live(block, now)
        assert live == [r for r in doc.rules if r.live(block, now)], seed
        k = rng.randint(1, 8)
        forbidden = set(rng.sample(list(catalog), min(3, len(catalog))))
        for may_show in (None, lambda i, f=forbidden: i not in f):
            want = ref_apply(candidates, catalog.get, live, k, may_show)
            got = apply_rules(candidates, catalog.get, list(live), k, may_show)
            assert (got.items, got.fired) == (want.items, want.fired), (seed, may_show)
            again = apply_rules(candidates, catalog.get, doc.live(block, now), k, may_show)
            assert again == got, seed  # the second time from the plan kept for the list
            fired += bool(want.fired)
            pinned += any(r.action == "pin" and r.id in want.fired for r in live)
    assert fired > CASES // 12 and pinned > CASES // 40, (fired, pinned)  # the cases do things


def test_the_probes_documents_give_what_the_reference_gives() -> None:
    """At the bounds: a pin listing 1000 items with 9 exclusions, and 499 exclusions."""
    rng = random.Random(5)
    catalog = {
        f"i{n}": Product(
            f"i{n}",
            f"P {n}",
            "https://s.example/p",
            "https://s.example/i.jpg",
            rng.choice(PRICES),
            "GBP",
            rng.choice(AVAILABILITY),
            category=rng.choice(CATEGORIES),
            brand=f"b{n % 50}",
        )
        for n in range(2000)
    }
    ids = list(catalog)
    listed = rng.sample(ids, 1000)
    for excludes, pins in ((8, 1), (498, 0)):
        rules: list[dict[str, Any]] = [
            {"id": f"x{n}", "action": "exclude", "match": {"brand": f"b{n}"}}
            for n in range(excludes)
        ]
        rules.append({"id": "cheap", "action": "exclude", "match": {"max_price": 5}})
        rules += [
            {"id": f"p{n}", "action": "pin", "position": 1, "match": {"item_ids": listed}}
            for n in range(pins)
        ]
        live = parse_rules({"rules": rules}).live("recommendations", NOW)
        for _ in range(20):
            candidates = rng.sample(ids, 18)
            want = ref_apply(candidates, catalog.get, live, 6)
            got = apply_rules(candidates, catalog.get, live, 6)
            assert (got.items, got.fired) == (want.items, want.fired)


def test_live_lists_follow_the_phases() -> None:
    """`Rules.live` keeps a list per block (its newest phase): every time between two bounds (and at
    them) gives what a scan gives."""
    doc = parse_rules(
        {
            "rules": [
                {"id": "a", "action": "exclude", "match": {"brand": "x"}, "starts": NOW},
                {"id": "b", "action": "exclude", "match": {"brand": "x"}, "ends": NOW + 10},
                {
                    "id": "c",
                    "action": "exclude",
                    "match": {"brand": "x"},
                    "starts": NOW + 5,
                    "ends": NOW + 10,
                    "blocks": ["winback"],
                },
            ]
        }
    )
    for now in range(NOW - 2, NOW + 13):
        for block in RULE_BLOCKS:
            assert doc.live(block, now) == [r for r in doc.rules if r.live(block, now)], now
