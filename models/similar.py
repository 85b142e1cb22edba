"""Items like this one, and recommendations that reach products the model has not seen yet
(issue 17 item 4; issue 18 item 2 serves `similar_items` as `GET /v1/items/{id}/similar`).

A trained recommender knows the items of its training data; a product added to the catalog since
has no co-occurrence neighbours until the next training. Content similarity (category, brand,
title tokens, price band: `engine.similarity.ContentIndex`) covers it:

- `similar_items`: an item's co-occurrence neighbours from the active model, with products the
  model has not seen that are much like it in a few places; for an item the model has not seen,
  its content neighbours.
- `blend`: a user's recommendations, when their history holds items the model has not seen,
  give those items' content neighbours a share of the slots equal to their share of the
  history's recency weight; and new products much like the user's newest known items take a few
  places, never the first FRESH_AFTER.

The constants are conservative defaults, not tuned: no data set at hand has catalog attributes
and products added after a training. The model's evidence keeps the lead wherever it has any; a
new product shows only when it shares at least a category and price band, a brand and category,
or most of a title (FRESH_MIN) with what the user looked at, and in at most FRESH_SLOTS places.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Container, Sequence

from engine.profile import Profile, history_newest
from engine.similarity import ContentIndex, Skip
from models.item_ids import ItemIds
from models.recs import RECENCY_DECAY, recency_weights

FRESH_MIN = 0.35  # content similarity a new product needs to stand beside known items
FRESH_SLOTS = 2  # places new products may take in a list of known items' neighbours
FRESH_AFTER = 2  # ... never ahead of the model's first FRESH_AFTER items
FRESH_EVERY = 5  # ... and this many places apart
CONTENT_SCAN = 50  # content neighbours asked for per history item
FRESH_SCAN = 10  # new products asked for per known item (before the user's exclusions)
MAX_UNKNOWN = 5  # newest history items the model has not seen that bring content neighbours
MAX_KNOWN = 3  # newest history items the model knows that may bring new products

Allowed = Callable[[str], bool] | None
Content = ContentIndex  # what models.scoring takes (the state's `content_index`)


def known_items(recs: object) -> Skip | None:
    """The items the model was trained on (None: it does not say; then nothing is blended),
    kept on the model object (a loaded model does not change). A recs model's own `ItemIds`
    answer `in` from their hash index: no set of a million strings beside them."""
    items = getattr(recs, "items", None)
    if isinstance(items, ItemIds):
        return items
    known = getattr(recs, "_known_items", None)
    if isinstance(known, frozenset):
        return known
    if not isinstance(items, list):
        return None
    known = frozenset(items)
    with contextlib.suppress(AttributeError, TypeError):  # slots: computed again next time
        setattr(recs, "_known_items", known)  # noqa: B010
    return known


def _ok(exclude: Container[str], allowed: Allowed) -> Callable[[str], bool]:
    return lambda item: item not in exclude and (allowed is None or allowed(item))


def similar_items(
    item_id: str,
    n: int,
    recs: object,
    content: ContentIndex | None,
    allowed: Allowed = None,
    exclude: Container[str] = (),
) -> list[str]:
    """Up to n item ids like `item_id`, best first: never `item_id` itself, never one in
    `exclude`, only those `allowed` takes (pass the in-stock check, e.g. the API's
    `ContentService._allowed`: catalog product known and purchasable).

    `recs` is the active recommender (`ModelSet.recs`, or a user's `for_user(...).recs`); its
    `neighbours_of` gives the co-occurrence neighbours. `content` is the state's content index
    (`content_index` of the worker's and the readers' state), None when there is none.
    - An item the model knows: its neighbours in the model's order; products the model has not
      seen with content similarity >= FRESH_MIN take up to FRESH_SLOTS places (never among the
      first FRESH_AFTER); content neighbours fill what is left.
    - An item the model has not seen (new in the catalog): its content neighbours.
    Unknown to both: an empty list."""
    if n < 1:
        return []
    ok = _ok(exclude, allowed)
    neighbours = getattr(recs, "neighbours_of", None)
    model = [i for i, _w in neighbours(item_id)] if neighbours is not None else []
    model = [i for i in model if i != item_id and ok(i)]
    if content is None:
        return model[:n]
    known = known_items(recs)
    fresh = [] if not model else _fresh_like(item_id, content, known, ok)
    alike = [i for i, _s in content.similar(item_id, CONTENT_SCAN + n) if ok(i)]
    return _place_fresh(_merge(model, alike, 0.0, n), fresh, n)


def _fresh_like(
    item_id: str, content: ContentIndex, known: Skip | None, ok: Callable[[str], bool]
) -> list[str]:
    """Products the model has not seen that are much like `item_id` (similarity >= FRESH_MIN).
    The index memoizes the query (its `skip`, the model's items, is the same object each time)."""
    if known is None:
        return []
    found = content.similar(item_id, FRESH_SCAN, skip=known)
    return [i for i, s in found if s >= FRESH_MIN and ok(i)][:FRESH_SLOTS]


def blend(
    ranked: list[str],
    recent: Sequence[tuple[str, int]],
    recs: object,
    content: ContentIndex | None,
    exclude: Container[str],
    allowed: Allowed,
    k: int,
) -> list[str]:
    """The model's recommendations `ranked` (from `recent`, (item_id, ts) newest first) with
    content neighbours of the history items the model has not seen, in a share of the places
    equal to those items' share of the recency weight, and up to FRESH_SLOTS new products much
    like the newest known items (module doc). `ranked` unchanged without a content index or
    when the model does not say which items it knows."""
    known = known_items(recs)
    if content is None or known is None or not recent:
        return ranked
    recent = recent[: int(getattr(recs, "history", len(recent)))]  # what the model reads
    weights = _weights(recs, recent)
    unseen = [
        (item, w)
        for (item, _ts), w in zip(recent, weights, strict=True)
        if item not in known and item in content
    ][:MAX_UNKNOWN]
    ok = _ok(exclude, allowed)
    share = sum(w for _i, w in unseen) / sum(weights)
    alike = _content_ranked(unseen, content, ok)
    fresh: list[str] = []
    for item in [i for i, _ts in recent if i in known][:MAX_KNOWN]:
        fresh += _fresh_like(item, content, known, ok)
    return _place_fresh(_merge(ranked, alike, share, k), fresh, k)


def with_content(
    ranked: list[str],
    profile: Profile,
    recs: object,
    content: ContentIndex | None,
    exclude: Container[str],
    allowed: Allowed,
    k: int,
) -> list[str]:
    """`blend` of a profile's recommendations `ranked` (the hook of models.scoring)."""
    if content is None:
        return ranked
    return blend(ranked, history_newest(profile), recs, content, exclude, allowed, k)


def _weights(recs: object, recent: Sequence[tuple[str, int]]) -> list[float]:
    """The model's recency weights of `recent` (decay**rank plus its floor, as it scores)."""
    floor = float(getattr(recs, "history_floor", 0.0))
    decay = float(getattr(recs, "recency_decay", RECENCY_DECAY))
    return [w + floor for w in recency_weights(recent, decay)]


def _content_ranked(
    unseen: list[tuple[str, float]], content: ContentIndex, ok: Callable[[str], bool]
) -> list[str]:
    """Content neighbours of the unseen history items, by recency weight x similarity."""
    scores: dict[str, float] = {}
    for item, weight in unseen:
        for other, similarity in content.similar(item, CONTENT_SCAN):  # memoized by the index
            if ok(other):
                scores[other] = scores.get(other, 0.0) + weight * similarity
    return sorted(scores, key=lambda i: (-scores[i], i))


def _merge(first: list[str], second: list[str], share: float, k: int) -> list[str]:
    """Up to k distinct items from both lists, in order, `second` taking a `share` of the places
    (as evenly as rounding allows: after p places, round(share * p) of them); either list fills
    what the other lacks."""
    out: list[str] = []
    seen: set[str] = set()
    lists, at, from_second = (first, second), [0, 0], 0
    while len(out) < k:
        want = 1 if from_second < math.floor(share * (len(out) + 1) + 0.5) else 0
        for source in (want, 1 - want):
            item = _next_new(lists[source], at, source, seen)
            if item is not None:
                out.append(item)
                from_second += source
                break
        else:
            break
    return out


def _next_new(items: list[str], at: list[int], source: int, seen: set[str]) -> str | None:
    while at[source] < len(items):
        item = items[at[source]]
        at[source] += 1
        if item not in seen:
            seen.add(item)
            return item
    return None


def _place_fresh(out: list[str], fresh: list[str], k: int) -> list[str]:
    """`out` with up to FRESH_SLOTS of `fresh` at places FRESH_AFTER, FRESH_AFTER +
    FRESH_EVERY, ... (one already among the first FRESH_AFTER + 1 stays), cut to k."""
    new = [i for i in dict.fromkeys(fresh) if i not in out[: FRESH_AFTER + 1]][:FRESH_SLOTS]
    result = [i for i in out if i not in new]
    for n, item in enumerate(new):
        result.insert(min(FRESH_AFTER + n * FRESH_EVERY, len(result)), item)
    return result[:k]
