"""Content similarity of catalog products: what makes two products alike before anyone bought
them (issue 17 item 4). Pure: stdlib only, no clock.

Each product becomes a few features (`features`):
- its title's tokens (`tokenize`): lower-cased words of letters and digits, stop words, one-letter
  words and pure numbers dropped, a plural `s` cut, at most MAX_TOKENS distinct ones, each at
  most MAX_TOKEN_CHARS long;
- its category and its brand (case and spacing folded);
- its price band (`price_band`): bands grow by BAND_RATIO, so prices within a factor of about
  1.5 share a band or sit in neighbouring ones.

The similarity of two products is in [0, 1]:

    W_TITLE * cosine of the titles' token sets, each token weighted by its idf in the catalog
  + W_CATEGORY * [same category] + W_BRAND * [same brand]
  + W_PRICE * (1 for the same band, 0.5 for a neighbouring one; same currency only)

`ContentIndex` holds the features of every product (`put` / `remove` as catalog records arrive)
and inverted lists from each feature to its products. `similar(item_id, n)` looks only at the
products that share something with the item: a title token whose list holds at most MAX_POSTING
products (a rarer token says more), the brand, or the category within one price band of it. Each
list is read newest first for at most MAX_SCAN products, summing a cheap estimate per candidate;
the best SHORTLIST (at least 2n) by estimate that pass the filters are scored exactly. A query
costs a bounded amount whatever the catalog's size, and answers are memoized until the index
changes (benchmarks/content_similarity.py measures both).

Memory: 500-700 bytes per product (measured by the benchmark with tracemalloc: the features, the
inverted-list entries, the id; longer titles cost more, at most MAX_TOKENS tokens count), plus the
memo (at most MEMO_ENTRIES answers, ~20 MB at 50 pairs each); at most MAX_ITEMS products are
indexed (the others are counted in `dropped` and never returned).
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
import sys
from collections.abc import Callable, Container, Hashable, Iterator
from dataclasses import dataclass
from typing import cast

from engine.catalog import Product

Skip = Container[str]  # ids never returned (hashable: a model's ids, one object for its life)

MAX_TOKENS = 16  # distinct title tokens kept per product
MAX_TOKEN_CHARS = 32
MAX_FIELD_CHARS = 200  # category and brand are compared on at most this many characters
BAND_RATIO = 1.5  # a price band spans prices within this factor
MAX_ITEMS = 500_000  # products indexed at most (~350 MB at ~700 bytes each)
MAX_POSTING = 2_000  # a title token shared by more products does not propose candidates
MAX_SCAN = 1_000  # entries read from one inverted list per query
SHORTLIST = 50  # candidates scored exactly (the best by their estimate), at least 2n
MEMO_ENTRIES = 5_000  # answers memoized (without `accept`) while the index does not change
W_TITLE = 0.5
W_CATEGORY = 0.25
W_BRAND = 0.15
W_PRICE = 0.10
_STOP = "a an and are as at by for from in into is it of on or the this to with without"
STOP_WORDS = frozenset(_STOP.split())
_WORD = re.compile(r"[^\W_]+")


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(title: str) -> tuple[str, ...]:
    """The title's distinct tokens in order of appearance (see the module doc)."""
    out: dict[str, None] = {}
    for word in _WORD.findall(title.lower()):
        if len(word) < 2 or word.isdigit() or word in STOP_WORDS:
            continue
        out.setdefault(sys.intern(_stem(word)[:MAX_TOKEN_CHARS]))
        if len(out) >= MAX_TOKENS:
            break
    return tuple(out)


def price_band(price: float) -> int:
    """The band of a price: floor(log(1 + price) / log(BAND_RATIO)); 0 for free products."""
    return int(math.log1p(max(price, 0.0)) / math.log(BAND_RATIO))


def _fold(text: str) -> str:
    return sys.intern(" ".join(text.lower().split())[:MAX_FIELD_CHARS])


@dataclass(frozen=True, slots=True)
class Features:
    """What the similarity of a product is computed from."""

    tokens: tuple[str, ...]
    category: str
    brand: str
    band: int
    currency: str
    available: bool


def features(product: Product) -> Features:
    return Features(
        tokens=tokenize(product.title),
        category=_fold(product.category),
        brand=_fold(product.brand),
        band=price_band(product.price),
        currency=sys.intern(product.currency),
        available=product.purchasable,
    )


def _keys(f: Features) -> Iterator[str]:
    """The inverted lists a product is in: its tokens, brand, and category with price band."""
    for token in f.tokens:
        yield "t:" + token
    if f.brand:
        yield "b:" + f.brand
    if f.category:
        yield f"c:{f.band}:{f.category}"


def _price_closeness(a: Features, b: Features) -> float:
    if a.currency != b.currency:
        return 0.0
    gap = abs(a.band - b.band)
    return 1.0 if gap == 0 else 0.5 if gap == 1 else 0.0


class ContentIndex:
    """The features of the catalog's products and their inverted lists (module doc). Not
    thread-safe: one event loop updates and reads it."""

    def __init__(self, max_items: int = MAX_ITEMS) -> None:
        self.max_items = max_items
        self._items: dict[str, Features] = {}
        self._lists: dict[str, dict[str, None]] = {}  # feature key -> products, oldest first
        self.generation = 0  # moves with every change: what callers memoize against
        self.dropped = 0  # products not indexed because the index was full
        self._memo: dict[tuple[str, int, bool, Hashable], tuple[tuple[str, float], ...]] = {}
        self._memo_generation = -1

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def get(self, item_id: str) -> Features | None:
        return self._items.get(item_id)

    def put(self, product: Product) -> bool:
        """Index a new or changed product; False when it is new and the index is full."""
        new = features(product)
        item_id = product.item_id
        old = self._items.get(item_id)
        if old == new:
            return True
        if old is None and len(self._items) >= self.max_items:
            self.dropped += 1
            return False
        if old is not None:
            self._unlist(item_id, old)
        self._items[item_id] = new
        for key in _keys(new):
            self._lists.setdefault(key, {})[item_id] = None
        self.generation += 1
        return True

    def remove(self, item_id: str) -> bool:
        """Forget a product (a catalog tombstone); False when it was not indexed."""
        old = self._items.pop(item_id, None)
        if old is None:
            return False
        self._unlist(item_id, old)
        self.generation += 1
        return True

    def _unlist(self, item_id: str, old: Features) -> None:
        for key in _keys(old):
            entries = self._lists.get(key)
            if entries is not None:
                entries.pop(item_id, None)
                if not entries:
                    del self._lists[key]

    def similarity(self, a: str, b: str) -> float:
        """The similarity of two indexed products (0 when either is not indexed)."""
        fa, fb = self._items.get(a), self._items.get(b)
        if fa is None or fb is None:
            return 0.0
        idf = _Idf(self, fa)
        return round(_score(fa, idf.norm(fa.tokens), fb, idf), 6)

    def similar(
        self,
        item_id: str,
        n: int,
        available_only: bool = True,
        accept: Callable[[str], bool] | None = None,
        skip: Skip = frozenset(),
    ) -> list[tuple[str, float]]:
        """Up to n (product, similarity) pairs most like `item_id`, best first (ties by id),
        never the product itself nor one in `skip`; only purchasable ones with
        `available_only`, only those `accept` takes when given. Empty for a product that is not
        indexed. Without `accept` the answer is memoized until the index changes."""
        if accept is not None:
            return self._similar(item_id, n, available_only, accept, skip)
        if self._memo_generation != self.generation or len(self._memo) >= MEMO_ENTRIES:
            self._memo.clear()
            self._memo_generation = self.generation
        key = (item_id, n, available_only, cast(Hashable, skip))  # hashable by contract
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = tuple(self._similar(item_id, n, available_only, None, skip))
        return list(hit)

    def _similar(
        self,
        item_id: str,
        n: int,
        available_only: bool,
        accept: Callable[[str], bool] | None,
        skip: Skip,
    ) -> list[tuple[str, float]]:
        """The cheap estimates of every candidate, then the exact similarity of the best
        max(SHORTLIST, 2n) of them that pass the filters."""
        query = self._items.get(item_id)
        if query is None or n < 1:
            return []
        idf = _Idf(self, query)
        norm = idf.norm(query.tokens)
        items = self._items
        estimates = self._estimates(item_id, query, idf, norm)
        shortlist: list[str] = []
        wanted = max(SHORTLIST, 2 * n)
        for c in sorted(estimates, key=estimates.__getitem__, reverse=True):
            if (available_only and not items[c].available) or c in skip:
                continue
            if accept is None or accept(c):
                shortlist.append(c)
                if len(shortlist) >= wanted:
                    break
        scored = [(-round(_score(query, norm, items[c], idf), 6), c) for c in shortlist]
        return [(c, -s) for s, c in heapq.nsmallest(n, scored) if s < 0.0]

    def _estimates(self, item_id: str, query: Features, idf: _Idf, norm: float) -> dict[str, float]:
        """Candidate -> a cheap estimate of its similarity, summed over the inverted lists it
        shares with the query (a title token's share taken as if both titles weighed the same;
        the price as the category's band says): rarest lists first, each read newest first for
        at most MAX_SCAN entries (so new products are found in long lists)."""
        lists: list[tuple[dict[str, None], float]] = []
        for token in query.tokens:
            entries = self._lists.get("t:" + token)
            if entries and len(entries) <= MAX_POSTING:
                lists.append((entries, W_TITLE * idf.weight(token) ** 2 / norm**2))
        if query.brand and (entries := self._lists.get("b:" + query.brand)):
            lists.append((entries, W_BRAND))
        for gap, closeness in ((0, 1.0), (-1, 0.5), (1, 0.5)) if query.category else ():
            if entries := self._lists.get(f"c:{query.band + gap}:{query.category}"):
                lists.append((entries, W_CATEGORY + W_PRICE * closeness))
        lists.sort(key=lambda entry: len(entry[0]))
        found: dict[str, float] = {}
        get = found.get
        for entries, value in lists:
            for candidate in itertools.islice(reversed(entries), MAX_SCAN):
                found[candidate] = get(candidate, 0.0) + value
        found.pop(item_id, None)
        return found


class _Idf:
    """Token weights of one query, memoized: log((N + 1) / (df + 1)) + 1 (smoothed idf)."""

    def __init__(self, index: ContentIndex, query: Features) -> None:
        self._index = index
        self.tokens = frozenset(query.tokens)  # the query's, for the overlap
        self._n = len(index) + 1
        self._memo: dict[str, float] = {}

    def weight(self, token: str) -> float:
        w = self._memo.get(token)
        if w is None:
            df = len(self._index._lists.get("t:" + token, ()))
            w = self._memo[token] = math.log(self._n / (df + 1)) + 1.0
        return w

    def norm(self, tokens: tuple[str, ...]) -> float:
        return math.sqrt(sum(self.weight(t) ** 2 for t in tokens))


def _score(query: Features, norm: float, other: Features, idf: _Idf) -> float:
    score = 0.0
    if norm > 0.0 and other.tokens:
        mine = idf.tokens
        shared = sum(idf.weight(t) ** 2 for t in other.tokens if t in mine)
        if shared:
            score += W_TITLE * shared / (norm * idf.norm(other.tokens))
    if query.category and query.category == other.category:
        score += W_CATEGORY
    if query.brand and query.brand == other.brand:
        score += W_BRAND
    if score == 0.0:
        return 0.0  # a price alone makes nothing alike
    return score + W_PRICE * _price_closeness(query, other)
