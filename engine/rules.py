"""Merchandising rules (issue 18 item 3; CONTRACT v1 `GET`/`PUT /v1/rules`). Pure: no I/O.

A shop's merchandiser says, per block and time window, what to `pin` (an item at a position),
`boost` or `bury` (a weight on matching items), `exclude` (never show) and `filter` (only show).
A rule matches products by item ids, category (the product's category or a sub-category of it,
`Home > Candles` under `Home`), brand, price range and availability.

`parse_rules` checks a document from outside (the HTTP body: hostile) and names the first
problem with its place (`rules[3].match.min_price: ...`), and refuses pins whose listed items
times the rules exceed `MAX_PIN_CHECKS`; `apply_rules` re-ranks a block's
candidates. Rules never bring back an item that is out of stock or unknown to the catalog, and
they only re-rank what the caller may show: consent and the block's own choice (personal or the
fallback) are decided before them.

Order of application: `exclude`, then `filter` (an item must match every filter of the block),
then `boost`/`bury` (each candidate's reciprocal rank 1/(1 + rank) times the weights of the rules
it matches; ties keep the recommender's order), then `pin` (by position, first rule first).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from engine.catalog import Product
from engine.events import InvalidEvent, parse_ts
from engine.text import text_problem

ACTIONS = ("pin", "boost", "bury", "exclude", "filter")
MATCH_FIELDS = ("item_ids", "category", "brand", "min_price", "max_price", "availability")
RULE_FIELDS = frozenset({"id", "action", "match", "weight", "position", "blocks", "starts", "ends"})
AVAILABILITY = ("in_stock", "out_of_stock", "preorder")
MAX_RULES = 500
MAX_ITEM_IDS = 1000  # per rule
MAX_ID = 128  # characters of a rule id, item id, block name, version
MAX_TEXT = 256  # characters of a category or brand
MAX_POSITION = 50  # the most items a block shows (engine.params)
MAX_WEIGHT = 100.0
# A pin tries its listed items, best first, each against the block's rules (is it excluded, does
# it pass the filters): the listed items of all pins times the rules, at most. ~5 ms of CPU a
# block, as many checks as the candidates of a block of 6 (RULES_WIDTH 3) against 500 rules: at
# 100,000 a 1000-recipient batch took ~35 s.
MAX_PIN_CHECKS = 10_000
DEFAULT_WEIGHT = {"boost": 2.0, "bury": 0.5}


class InvalidRules(ValueError):
    """A rules document that cannot be applied; the message names the place and the problem."""


@dataclass(frozen=True)
class Match:
    item_ids: frozenset[str] | None = None
    category: str | None = None  # casefolded
    brand: str | None = None  # casefolded
    min_price: float | None = None
    max_price: float | None = None
    availability: str | None = None

    def matches(self, product: Product) -> bool:
        checks = (
            self.item_ids is None or product.item_id in self.item_ids,
            self.category is None or _under(product.category, self.category),
            self.brand is None or product.brand.casefold() == self.brand,
            self.min_price is None or product.price >= self.min_price,
            self.max_price is None or product.price <= self.max_price,
            self.availability is None or product.availability == self.availability,
        )
        return all(checks)


@dataclass(frozen=True)
class Rule:
    id: str
    action: str
    match: Match
    weight: float = 1.0
    position: int | None = None  # pin: 1 = first
    blocks: frozenset[str] | None = None  # None: every block
    starts: int | None = None  # epoch ms, included
    ends: int | None = None  # epoch ms, excluded

    def live(self, block: str, now_ms: int) -> bool:
        in_block = self.blocks is None or block in self.blocks
        started = self.starts is None or now_ms >= self.starts
        return in_block and started and (self.ends is None or now_ms < self.ends)


@dataclass(frozen=True)
class Rules:
    version: str
    rules: tuple[Rule, ...] = ()

    def live(self, block: str, now_ms: int) -> list[Rule]:
        return [rule for rule in self.rules if rule.live(block, now_ms)]

    def phase(self, now_ms: int) -> int:
        """How many rule start and end times have passed at `now_ms`: a cached block made in
        another phase may show what a rule no longer (or not yet) allows (api/content.py)."""
        return bisect.bisect_right(self._bounds, now_ms)

    @cached_property
    def _bounds(self) -> list[int]:
        times = [t for rule in self.rules for t in (rule.starts, rule.ends) if t is not None]
        return sorted(times)


NO_RULES = Rules("0")


@dataclass(frozen=True)
class Applied:
    items: list[str]
    fired: list[str]  # ids of the rules that changed the block, in document order


Catalog = Callable[[str], Product | None]


def apply_rules(
    candidates: Sequence[str],
    catalog: Catalog,
    rules: list[Rule],
    k: int,
    may_show: Callable[[str], bool] | None = None,
) -> Applied:
    """The first `k` of `candidates` (best first, each one the caller may show) as `rules`
    (already chosen for the block and the time: `Rules.live`) re-rank them; a pin brings in an
    item from outside the candidates only when `may_show(item)` (the request's exclusions, the
    user's own purchases: the caller's rules still hold)."""
    if not rules:
        return Applied(list(candidates[:k]), [])
    if may_show is not None:
        catalog = _only(catalog, set(candidates), may_show)
    products = {item: catalog(item) for item in candidates}
    kept = [item for item in candidates if _showable(products[item])]
    fired: set[str] = set()
    kept = _exclude(kept, products, rules, fired)
    kept = _filter(kept, products, rules, fired)
    kept = _weigh(kept, products, rules, fired)
    out = _pin(kept, catalog, rules, k, fired)
    return Applied(out, [rule.id for rule in rules if rule.id in fired])


def _only(catalog: Catalog, candidates: set[str], may_show: Callable[[str], bool]) -> Catalog:
    def lookup(item: str) -> Product | None:
        return catalog(item) if item in candidates or may_show(item) else None

    return lookup


def _showable(product: Product | None) -> bool:
    return product is not None and product.availability != "out_of_stock"


def _exclude(
    items: list[str], products: dict[str, Product | None], rules: list[Rule], fired: set[str]
) -> list[str]:
    out = []
    for item in items:
        hits = [r.id for r in rules if r.action == "exclude" and _hit(r, products[item])]
        fired.update(hits)
        if not hits:
            out.append(item)
    return out


def _filter(
    items: list[str], products: dict[str, Product | None], rules: list[Rule], fired: set[str]
) -> list[str]:
    filters = [r for r in rules if r.action == "filter"]
    out = [item for item in items if all(_hit(r, products[item]) for r in filters)]
    if len(out) < len(items):
        fired.update(r.id for r in filters if any(not _hit(r, products[i]) for i in items))
    return out


def _weigh(
    items: list[str], products: dict[str, Product | None], rules: list[Rule], fired: set[str]
) -> list[str]:
    weights = [r for r in rules if r.action in ("boost", "bury")]
    if not weights:
        return items
    scores = {}
    for rank, item in enumerate(items):
        score = 1.0 / (1 + rank)
        for rule in weights:
            if _hit(rule, products[item]):
                score *= rule.weight
        scores[item] = score
    out = sorted(items, key=lambda item: -scores[item])  # stable: ties keep their order
    if out != items:
        moved = {item for item, before in zip(out, items, strict=True) if item != before}
        fired.update(r.id for r in weights if any(_hit(r, products[i]) for i in moved))
    return out


def _pin(
    items: list[str], catalog: Catalog, rules: list[Rule], k: int, fired: set[str]
) -> list[str]:
    out = list(items)
    pins = sorted((r for r in rules if r.action == "pin"), key=lambda r: r.position or 1)
    placed: set[str] = set()
    for rule in pins:
        item = _pinned(rule, out, catalog, rules, placed)
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


def _pinned(
    rule: Rule, items: list[str], catalog: Catalog, rules: list[Rule], placed: set[str]
) -> str | None:
    """The item `rule` pins: its first listed item that is showable and that the block's
    exclusions and filters allow, or else the best candidate it matches; never one another pin
    placed."""

    def eligible(item: str) -> bool:
        product = catalog(item)
        return item not in placed and _hit(rule, product) and _allowed(product, rules)

    if rule.match.item_ids is not None:
        listed = sorted(rule.match.item_ids, key=lambda i: (i not in items, i))
        return next((item for item in listed if eligible(item)), None)
    return next((item for item in items if eligible(item)), None)


def _allowed(product: Product | None, rules: list[Rule]) -> bool:
    excluded = any(r.action == "exclude" and _hit(r, product) for r in rules)
    return not excluded and all(_hit(r, product) for r in rules if r.action == "filter")


def _hit(rule: Rule, product: Product | None) -> bool:
    return _showable(product) and product is not None and rule.match.matches(product)


def _under(category: str, wanted: str) -> bool:
    have = category.casefold()
    return have == wanted or have.startswith(wanted + " > ")


# Parsing a document from outside


def parse_rules(document: Any) -> Rules:
    """The rules of a `PUT /v1/rules` body, or InvalidRules naming the first problem."""
    if not isinstance(document, dict):
        raise InvalidRules("the body must be an object with `rules` (a list)")
    unknown = sorted(set(document) - {"version", "rules"})
    if unknown:
        raise InvalidRules(f"unknown field {unknown[0]!r} (allowed: version, rules)")
    items = document.get("rules")
    if not isinstance(items, list):
        raise InvalidRules("rules: must be a list")
    if len(items) > MAX_RULES:
        raise InvalidRules(f"rules: at most {MAX_RULES} rules")
    version = document.get("version", "0")
    _check_id(version, "version")
    rules = tuple(_rule(item, f"rules[{n}]") for n, item in enumerate(items))
    ids = [rule.id for rule in rules]
    duplicate = next((i for n, i in enumerate(ids) if i in ids[:n]), None)
    if duplicate is not None:
        raise InvalidRules(f"rules: the id {duplicate!r} is used twice")
    _check_pin_work(rules)
    return Rules(str(version), rules)


def _check_pin_work(rules: tuple[Rule, ...]) -> None:
    """Refuse pins whose listed items, each tried against every rule, would cost more than
    MAX_PIN_CHECKS checks in a block (a 440 KB document cost seconds of CPU per block)."""
    listed = sum(len(r.match.item_ids or ()) for r in rules if r.action == "pin")
    if listed * len(rules) > MAX_PIN_CHECKS:
        raise InvalidRules(
            f"rules: the pins list {listed} item ids and there are {len(rules)} rules; a pin "
            f"checks each listed item against every rule, at most {MAX_PIN_CHECKS} checks in "
            "all: list fewer items to pin or use fewer rules"
        )


def _rule(data: Any, where: str) -> Rule:
    if not isinstance(data, dict):
        raise InvalidRules(f"{where}: must be an object")
    unknown = sorted(set(data) - RULE_FIELDS)
    if unknown:
        raise InvalidRules(f"{where}: unknown field {unknown[0]!r}")
    _check_id(data.get("id"), f"{where}.id")
    action = data.get("action")
    if action not in ACTIONS:
        raise InvalidRules(f"{where}.action: must be one of {', '.join(ACTIONS)}")
    starts, ends = _time(data, "starts", where), _time(data, "ends", where)
    if starts is not None and ends is not None and ends <= starts:
        raise InvalidRules(f"{where}.ends: must be after starts")
    return Rule(
        id=data["id"],
        action=action,
        match=_match(data.get("match"), f"{where}.match"),
        weight=_weight(data, action, where),
        position=_position(data, action, where),
        blocks=_blocks(data.get("blocks"), f"{where}.blocks"),
        starts=starts,
        ends=ends,
    )


def _match(data: Any, where: str) -> Match:
    if not isinstance(data, dict) or not data:
        raise InvalidRules(f"{where}: must be an object with at least one of {MATCH_FIELDS}")
    unknown = sorted(set(data) - set(MATCH_FIELDS))
    if unknown:
        raise InvalidRules(f"{where}: unknown field {unknown[0]!r}")
    low, high = _price(data, "min_price", where), _price(data, "max_price", where)
    if low is not None and high is not None and high < low:
        raise InvalidRules(f"{where}.max_price: must be at least min_price")
    availability = data.get("availability")
    if availability is not None and availability not in AVAILABILITY:
        raise InvalidRules(f"{where}.availability: must be one of {', '.join(AVAILABILITY)}")
    return Match(
        item_ids=_item_ids(data.get("item_ids"), f"{where}.item_ids"),
        category=_text(data.get("category"), f"{where}.category"),
        brand=_text(data.get("brand"), f"{where}.brand"),
        min_price=low,
        max_price=high,
        availability=availability,
    )


def _item_ids(value: Any, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not 0 < len(value) <= MAX_ITEM_IDS:
        raise InvalidRules(f"{where}: must be a list of 1..{MAX_ITEM_IDS} item ids")
    for n, item in enumerate(value):
        _check_id(item, f"{where}[{n}]")
    return frozenset(value)


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value.strip()) <= MAX_TEXT:
        raise InvalidRules(f"{where}: must be a string of 1..{MAX_TEXT} characters")
    problem = text_problem(value)  # as the catalog's text: no product could match it
    if problem:
        raise InvalidRules(f"{where}: {problem}")
    return value.strip().casefold()


def _price(data: dict[str, Any], name: str, where: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    number = _finite(value)
    if number is None:
        raise InvalidRules(f"{where}.{name}: must be a number")
    if number < 0:
        raise InvalidRules(f"{where}.{name}: must be >= 0")
    return number


def _finite(value: Any) -> float | None:
    """A JSON number as a finite float, or None (not a number, NaN, infinite, or an integer
    too large for a float: math.isfinite and float() raise OverflowError on those)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _weight(data: dict[str, Any], action: str, where: str) -> float:
    value = data.get("weight")
    if action not in DEFAULT_WEIGHT:
        if value is not None:
            raise InvalidRules(f"{where}.weight: only boost and bury rules have a weight")
        return 1.0
    if value is None:
        return DEFAULT_WEIGHT[action]
    if _finite(value) is None:
        raise InvalidRules(f"{where}.weight: must be a number")
    if action == "boost" and not 1.0 < value <= MAX_WEIGHT:
        raise InvalidRules(
            f"{where}.weight: a boost's weight is more than 1, at most {MAX_WEIGHT:g}"
        )
    if action == "bury" and not 0.0 < value < 1.0:
        raise InvalidRules(f"{where}.weight: a bury's weight is more than 0 and less than 1")
    return float(value)


def _position(data: dict[str, Any], action: str, where: str) -> int | None:
    value = data.get("position")
    if action != "pin":
        if value is not None:
            raise InvalidRules(f"{where}.position: only pin rules have a position")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_POSITION:
        raise InvalidRules(f"{where}.position: a pin needs a position 1..{MAX_POSITION}")
    return value


def _blocks(value: Any, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InvalidRules(f"{where}: must be a non-empty list of block names")
    for n, block in enumerate(value):
        if block not in RULE_BLOCKS:
            raise InvalidRules(f"{where}[{n}]: must be one of {', '.join(RULE_BLOCKS)}")
    return frozenset(value)


def _time(data: dict[str, Any], name: str, where: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    try:
        return parse_ts(value)
    except InvalidEvent as exc:
        raise InvalidRules(f"{where}.{name}: {exc}") from None


def _check_id(value: Any, where: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or not value.isprintable():
        raise InvalidRules(f"{where}: must be a printable string of 1..{MAX_ID} characters")


RULE_BLOCKS = ("recommendations", "cart_reminder", "winback", "similar_items")


def to_document(rules: Rules) -> dict[str, Any]:
    """The document `GET /v1/rules` answers: what was put, in the contract's shape."""
    return {"version": rules.version, "rules": [_rule_document(rule) for rule in rules.rules]}


def _rule_document(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rule.id, "action": rule.action, "match": _match_document(rule)}
    if rule.action in DEFAULT_WEIGHT:
        out["weight"] = rule.weight
    if rule.position is not None:
        out["position"] = rule.position
    if rule.blocks is not None:
        out["blocks"] = sorted(rule.blocks)
    for name in ("starts", "ends"):
        value = getattr(rule, name)
        if value is not None:
            out[name] = value
    return out


def _match_document(rule: Rule) -> dict[str, Any]:
    match = rule.match
    out: dict[str, Any] = {}
    if match.item_ids is not None:
        out["item_ids"] = sorted(match.item_ids)
    for name in MATCH_FIELDS[1:]:
        value = getattr(match, name)
        if value is not None:
            out[name] = value
    return out
