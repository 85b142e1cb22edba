"""Merchandising rules (issue 18 item 3; CONTRACT v1 `GET`/`PUT /v1/rules`). Pure: no I/O.

A shop's merchandiser says, per block and time window, what to `pin` (an item at a position),
`boost` or `bury` (a weight on matching items), `exclude` (never show) and `filter` (only show).
A rule matches products by item ids, category (the product's category or a sub-category of it,
`Home > Candles` under `Home`), brand, price range and availability.

`parse_rules` checks a document from outside (the HTTP body: hostile) and names the first
problem with its place (`rules[3].match.min_price: ...`), and refuses pins whose listed items
times the rules exceed `MAX_PIN_CHECKS`; `apply_rules` re-ranks a block's candidates. Rules never
bring back an item that is out of stock or unknown to the catalog, and they only re-rank what the
caller may show: consent and the block's own choice (personal or the fallback) are decided
before them.

`apply_rules` runs on the API's event loop for every block of a batch: what it needs of a list
of live rules (`Rules.live`, kept per block for its current phase) is worked out once and kept
with it (`_plan`: the rules split by action and indexed by the item ids, brand or category they
match, the pins' listed ids sorted), and each item's product and verdicts once per block
(`_Block`). A replaced document's plans, and an earlier phase's, are freed.

Order of application: `exclude`, then `filter` (an item must match every filter of the block),
then `boost`/`bury` (each candidate's reciprocal rank 1/(1 + rank) times the weights of the rules
it matches; ties keep the recommender's order), then `pin` (by position, first rule first).
"""

from __future__ import annotations

import bisect
import math
import weakref
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
# it pass the filters): the listed items of all pins times the rules, at most. Before `_plan` a
# block at this bound took ~5 ms of CPU (at 100,000 a 1000-recipient batch took ~35 s); with it,
# a 1,000-item pin whose items are all excluded, plus 10 rules, ~1 ms a block
# (benchmarks/rules_batch.py), the bound's worst case.
MAX_PIN_CHECKS = 10_000
DEFAULT_WEIGHT = {"boost": 2.0, "bury": 0.5}
MAX_LIVE = 16  # live lists a document keeps (one a block: `Rules.live`), each with its plan


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
        return (
            (self.item_ids is None or product.item_id in self.item_ids)
            and (self.category is None or _under(product.category, self.category))
            and (self.brand is None or product.brand.casefold() == self.brand)
            and (self.min_price is None or product.price >= self.min_price)
            and (self.max_price is None or product.price <= self.max_price)
            and (self.availability is None or product.availability == self.availability)
        )


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
        """The rules live in `block` at `now_ms`, in the document's order. The same in every
        `phase` (each rule's start and end times are among the bounds), so kept per block for
        the newest phase seen, with their plan (`apply_rules` finds it by the rules' ids): the
        same rule objects each time. An earlier phase's lists and plans are not kept (a rule
        starting every second made a new plan of the whole document each second, and 64 were
        kept), nor are a replaced document's: they go with it."""
        phase = self.phase(now_ms)
        kept = self._live.get(block)
        if kept is not None and kept[0] == phase:
            return list(kept[1])
        found = tuple(rule for rule in self.rules if rule.live(block, now_ms))
        if kept is None or phase > kept[0]:  # a time before the newest seen: not kept
            if len(self._live) >= MAX_LIVE:
                self._live.clear()
            self._live[block] = (phase, found, _plan(found))
        return list(found)

    def phase(self, now_ms: int) -> int:
        """How many rule start and end times have passed at `now_ms`: a cached block made in
        another phase may show what a rule no longer (or not yet) allows (api/content.py)."""
        return bisect.bisect_right(self._bounds, now_ms)

    @cached_property
    def _bounds(self) -> list[int]:
        times = [t for rule in self.rules for t in (rule.starts, rule.ends) if t is not None]
        return sorted(times)

    @cached_property
    def _live(self) -> dict[str, tuple[int, tuple[Rule, ...], _Plan]]:
        """Block -> (its newest phase seen, the rules live then, their plan)."""
        return {}


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
    user's own purchases: the caller's rules still hold). `catalog` and `may_show` are read at
    most once per item (they must not change during the call)."""
    if not rules:
        return Applied(list(candidates[:k]), [])
    if may_show is not None:
        catalog = _only(catalog, set(candidates), may_show)
    plan = _plan(rules)
    block = _Block(plan, catalog)
    kept = [item for item in candidates if _showable(block.product(item))]
    fired: set[str] = set()
    kept = block.exclude(kept, fired)
    kept = block.filter(kept, fired)
    kept = block.weigh(kept, fired)
    out = block.pin(kept, k, fired)
    return Applied(out, [rule_id for rule_id in plan.ids if rule_id in fired] if fired else [])


def _only(catalog: Catalog, candidates: set[str], may_show: Callable[[str], bool]) -> Catalog:
    def lookup(item: str) -> Product | None:
        return catalog(item) if item in candidates or may_show(item) else None

    return lookup


def _showable(product: Product | None) -> bool:
    return product is not None and product.availability != "out_of_stock"


def _under(category: str, wanted: str) -> bool:
    have = category.casefold()
    return have == wanted or have.startswith(wanted + " > ")


def _categories(category: str) -> list[str]:
    """Every `wanted` that `_under(category, wanted)` holds for: the category (casefolded) and
    each of its prefixes that ends before a " > "."""
    have = category.casefold()
    out = [have]
    at = have.find(" > ")
    while at != -1:
        out.append(have[:at])
        at = have.find(" > ", at + 1)
    return out


class _Group:
    """Rules of one action (in the order given), indexed by what a product must have to match
    them: its item id, its brand or its category (a rule matching by none of them is checked
    against every product). A rule is indexed by one of its fields and then checked whole, so
    a product is checked only against the rules it may match."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.by_item: dict[str, list[int]] = {}
        self.by_brand: dict[str, list[int]] = {}
        self.by_category: dict[str, list[int]] = {}
        self.rest: list[int] = []
        for n, rule in enumerate(rules):
            match = rule.match
            if match.item_ids is not None:
                for item in match.item_ids:
                    self.by_item.setdefault(item, []).append(n)
            elif match.brand is not None:
                self.by_brand.setdefault(match.brand, []).append(n)
            elif match.category is not None:
                self.by_category.setdefault(match.category, []).append(n)
            else:
                self.rest.append(n)

    def _maybe(self, product: Product) -> list[int]:
        found = list(self.rest)
        if self.by_item:
            found += self.by_item.get(product.item_id, ())
        if self.by_brand:
            found += self.by_brand.get(product.brand.casefold(), ())
        if self.by_category:
            for wanted in _categories(product.category):
                found += self.by_category.get(wanted, ())
        return found  # each rule at most once: it is indexed under one key

    def hits(self, product: Product) -> list[int]:
        """The places (ascending: the rules' order) of the rules `product` (showable) matches."""
        rules = self.rules
        found = [n for n in self._maybe(product) if rules[n].match.matches(product)]
        found.sort()
        return found

    def any(self, product: Product) -> bool:
        """`product` (showable) matches one of the rules (`hits`, stopping at the first)."""
        rules = self.rules
        for n in self.rest:
            if rules[n].match.matches(product):
                return True
        if self.by_item:
            for n in self.by_item.get(product.item_id, ()):
                if rules[n].match.matches(product):
                    return True
        if self.by_brand:
            for n in self.by_brand.get(product.brand.casefold(), ()):
                if rules[n].match.matches(product):
                    return True
        if self.by_category:
            for wanted in _categories(product.category):
                for n in self.by_category.get(wanted, ()):
                    if rules[n].match.matches(product):
                        return True
        return False


@dataclass(frozen=True)
class _Plan:
    """What applying a list of live rules needs, computed once per list (`_plan`)."""

    rules: tuple[Rule, ...]  # held: the cache's key is their ids
    ids: tuple[str, ...]
    excludes: _Group
    filters: _Group
    weights: _Group  # boost and bury
    pins: tuple[tuple[Rule, tuple[str, ...] | None], ...]  # by position; listed ids sorted

    @staticmethod
    def of(rules: Sequence[Rule]) -> _Plan:
        pins = sorted((r for r in rules if r.action == "pin"), key=lambda r: r.position or 1)
        return _Plan(
            rules=tuple(rules),
            ids=tuple(rule.id for rule in rules),
            excludes=_Group([r for r in rules if r.action == "exclude"]),
            filters=_Group([r for r in rules if r.action == "filter"]),
            weights=_Group([r for r in rules if r.action in ("boost", "bury")]),
            pins=tuple(
                (r, None if r.match.item_ids is None else tuple(sorted(r.match.item_ids)))
                for r in pins
            ),
        )


# The plans of the live rules lists that documents keep (`Rules.live`), by the ids of their
# rules: held weakly, so a plan goes with the document (or the phase) that kept it. A plan holds
# its rules, so no other rule has one of their ids while it is here. A list no document keeps
# (a time before a block's newest phase, a list made by hand) gets a plan of its own each call.
_PLANS: weakref.WeakValueDictionary[tuple[int, ...], _Plan] = weakref.WeakValueDictionary()


def _plan(rules: Sequence[Rule]) -> _Plan:
    key = tuple(map(id, rules))
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _Plan.of(rules)
    return plan


_UNREAD: Any = object()


class _Block:
    """Applying a plan to one block: each item's product and verdicts are worked out at most
    once (a pin's listed items are tried against the exclusions and filters once per block)."""

    def __init__(self, plan: _Plan, catalog: Catalog) -> None:
        self.plan = plan
        self.catalog = catalog
        self.products: dict[str, Product | None] = {}
        self.excluded: dict[str, list[int]] = {}
        self.filtered: dict[str, list[int]] = {}
        self.weighed: dict[str, list[int]] = {}
        self.allowed: dict[str, bool] = {}

    def product(self, item: str) -> Product | None:
        product = self.products.get(item, _UNREAD)
        if product is _UNREAD:
            product = self.products[item] = self.catalog(item)
        return product  # type: ignore[no-any-return]

    def _hits(self, memo: dict[str, list[int]], group: _Group, item: str) -> list[int]:
        """The rules of `group` the showable `item` matches (read once)."""
        found = memo.get(item)
        if found is None:
            product = self.product(item)
            assert product is not None
            found = memo[item] = group.hits(product)
        return found

    def exclude(self, items: list[str], fired: set[str]) -> list[str]:
        group = self.plan.excludes
        if not group.rules:
            return items
        out = []
        for item in items:
            hits = self._hits(self.excluded, group, item)
            if hits:
                fired.update(group.rules[n].id for n in hits)
            else:
                out.append(item)
        return out

    def filter(self, items: list[str], fired: set[str]) -> list[str]:
        """Only the items that match every filter; a filter fires when it drops an item (when
        any item is dropped, every filter some item fails fires)."""
        group = self.plan.filters
        need = len(group.rules)
        if not need:
            return items
        hits = {item: self._hits(self.filtered, group, item) for item in items}
        out = [item for item in items if len(hits[item]) == need]
        if len(out) < len(items):
            passed = set(range(need))
            for found in hits.values():
                passed.intersection_update(found)
            fired.update(rule.id for n, rule in enumerate(group.rules) if n not in passed)
        return out

    def weigh(self, items: list[str], fired: set[str]) -> list[str]:
        group = self.plan.weights
        if not group.rules:
            return items
        rules = group.rules
        scores = {}
        for rank, item in enumerate(items):
            score = 1.0 / (1 + rank)
            for n in self._hits(self.weighed, group, item):  # in the rules' order
                score *= rules[n].weight
            scores[item] = score
        out = sorted(items, key=lambda item: -scores[item])  # stable: ties keep their order
        if out != items:
            moved = {item for item, before in zip(out, items, strict=True) if item != before}
            fired.update(rules[n].id for i in moved for n in self.weighed[i])
        return out

    def pin(self, items: list[str], k: int, fired: set[str]) -> list[str]:
        out = list(items)
        placed: set[str] = set()
        for rule, listed in self.plan.pins:
            item = self._pinned(rule, listed, out, placed)
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
        self, rule: Rule, listed: tuple[str, ...] | None, items: list[str], placed: set[str]
    ) -> str | None:
        """The item `rule` pins: its first listed item (those in `items` first, each part in
        sorted order) that is showable and that the block's exclusions and filters allow, or
        else the best candidate it matches; never one another pin placed."""
        if listed is None:
            return next((item for item in items if self._eligible(rule, item, placed)), None)
        ids = rule.match.item_ids
        assert ids is not None
        inside = sorted({item for item in items if item in ids})
        for item in inside:
            if self._eligible(rule, item, placed):
                return item
        skip = set(inside)
        for item in listed:
            if item not in skip and self._eligible(rule, item, placed):
                return item
        return None

    def _eligible(self, rule: Rule, item: str, placed: set[str]) -> bool:
        if item in placed:
            return False
        product = self.products.get(item, _UNREAD)
        if product is _UNREAD:
            product = self.products[item] = self.catalog(item)
        if not _showable(product) or not rule.match.matches(product):
            return False
        allowed = self.allowed.get(item)
        if allowed is None:
            allowed = self.allowed[item] = self._allowed(item, product)
        return allowed

    def _allowed(self, item: str, product: Product) -> bool:
        """No exclusion matches the showable `product` and it matches every filter."""
        plan = self.plan
        excluded = self.excluded.get(item)
        if excluded is None:
            if plan.excludes.rules and plan.excludes.any(product):
                return False
        elif excluded:
            return False
        need = len(plan.filters.rules)
        return not need or len(self._hits(self.filtered, plan.filters, item)) == need


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
