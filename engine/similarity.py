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
and inverted lists from each feature to its products. `similar(item_id, n)` scores only the
products that share something with the item: a title token whose list holds at most MAX_POSTING
products (a rarer token says more), the brand, or the category within one price band; each list
is read for at most MAX_SCAN products and at most MAX_CANDIDATES are scored, so a query costs a
bounded amount whatever the catalog's size (benchmarks/content_similarity.py measures it).

Memory: about 1 KB per product at the default bounds, measured by the benchmark with tracemalloc
(the features, the inverted-list entries, the id); at most MAX_ITEMS products are indexed (the
others are counted in `dropped` and never returned).
"""

from __future__ import annotations

import heapq
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine.catalog import Product

MAX_TOKENS = 16  # distinct title tokens kept per product
MAX_TOKEN_CHARS = 32
MAX_FIELD_CHARS = 200  # category and brand are compared on at most this many characters
BAND_RATIO = 1.5  # a price band spans prices within this factor
MAX_ITEMS = 500_000  # products indexed at most (~0.5 GB at ~1 KB each)
MAX_POSTING = 2_000  # a title token shared by more products does not propose candidates
MAX_SCAN = 2_000  # entries read from one inverted list per query
MAX_CANDIDATES = 5_000  # products scored per query
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
    ) -> list[tuple[str, float]]:
        """Up to n (product, similarity) pairs most like `item_id`, best first (ties by id),
        never the product itself; only purchasable ones with `available_only`, only those
        `accept` takes when given. Empty for a product that is not indexed."""
        query = self._items.get(item_id)
        if query is None or n < 1:
            return []
        idf = _Idf(self, query)
        norm = idf.norm(query.tokens)
        scored: list[tuple[float, str]] = []
        for candidate in self._candidates(item_id, query):
            f = self._items[candidate]
            if (available_only and not f.available) or (
                accept is not None and not accept(candidate)
            ):
                continue
            score = _score(query, norm, f, idf)
            if score > 0.0:
                scored.append((-round(score, 6), candidate))
        return [(c, -s) for s, c in heapq.nsmallest(n, scored)]

    def _candidates(self, item_id: str, query: Features) -> dict[str, None]:
        """The products sharing a proposing feature with the query, rarest lists first, newest
        products first within a list (so new products are found in long lists)."""
        keys = list(_keys(query))
        if query.category:
            keys += [f"c:{query.band + d}:{query.category}" for d in (-1, 1)]
        lists = []
        for key in keys:
            entries = self._lists.get(key)
            if entries and not (key.startswith("t:") and len(entries) > MAX_POSTING):
                lists.append(entries)
        lists.sort(key=len)
        out: dict[str, None] = {}
        for entries in lists:
            for scanned, candidate in enumerate(reversed(entries)):
                if scanned >= MAX_SCAN:
                    break
                if candidate != item_id:
                    out[candidate] = None
                    if len(out) >= MAX_CANDIDATES:
                        return out
        return out


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
