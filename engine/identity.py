"""Identity (issue 19 item 2): the pure merge of an anonymous id's profile into a user's.

`merge(user, anon, user_id)` is what the user's partition applies when the anonymous id's packed
profile arrives (streams/app.py, docs/streams.md "Identity"). Every field is combined and then
bounded as `engine.profile.apply` bounds it, so a merged profile is never larger than a folded one
may be:

- counts, orders, spend (per currency: never across currencies), carts started/converted add;
  first seen is the earlier, last seen (and the other "newest" times) the later;
- the locale is the one set at the newer event time;
- recent items, purchases and the long history interleave by event time, one entry per item;
- carts combine (quantities add, capped per line, at most CART_LINES lines);
- affinities add per category/brand, the TOP_AFFINITIES strongest stay;
- sessions: the intervals of both, touching ones joined;
- the dedup memories unite (an event both ids sent is still folded once afterwards);
- consent is merged conservatively: each purpose's records are combined, and where either side's
  current value is a withdrawal the merged value is a withdrawal, recorded as a record of its own
  (source "identify") at the newest time of the purpose, so the next consent event the user sends
  decides again.

Once: the merge remembers `merge_key(anon)` (the anonymous id and its profile version) in the
user's dedup memory, and a merge whose key is already there returns the user's profile unchanged
(the same object), as `apply` does for a repeated event.
"""

from __future__ import annotations

from array import array

from engine.consent import PURPOSES, Record, merged
from engine.dedup import SeenIds
from engine.profile import (
    CART_LINES,
    CART_QUANTITY,
    DEDUP_HARD_CAP,
    DEDUP_IDS,
    DEDUP_WINDOW_MS,
    HISTORY_COUNT_MAX,
    HISTORY_ITEMS,
    HISTORY_SLACK,
    RECENT_ITEMS,
    RECENT_PURCHASES,
    SESSION_GAP_MS,
    TOP_AFFINITIES,
    Profile,
    add_spend,
    event_key,
    new_profile,
)

MERGE_SOURCE = "identify"  # the source of the withdrawal record a conservative merge adds


def merge_key(anon: Profile) -> int:
    """The dedup key of merging this version of the anonymous profile (its id, version and
    first and last event times: a history started afresh after an erasure is another one)."""
    a = anon
    return event_key(
        f"\x00identify-merge\x00{a.user_id}\x00{a.version}:{a.first_seen}:{a.last_seen}"
    )


def merge(user: Profile | None, anon: Profile, user_id: str) -> Profile:
    """The user's profile with the anonymous profile's history in it (see the module text)."""
    key = merge_key(anon)
    if user is not None and key in user.seen:
        return user
    p = new_profile(user_id) if user is None else user.copy()
    p.version += 1
    _merge_times(p, anon)
    _merge_counts(p, anon)
    p.recent = _interleave(p.recent, anon.recent, RECENT_ITEMS)
    p.purchased = _interleave(p.purchased, anon.purchased, RECENT_PURCHASES)
    p.history = _merge_history(p.history, anon.history)
    p.cart = _merge_cart(p.cart, anon.cart)
    p.categories = _merge_scores(p.categories, anon.categories)
    p.brands = _merge_scores(p.brands, anon.brands)
    p.spans, joined = _merge_spans(p.spans, anon.spans)
    p.sessions += anon.sessions - joined
    p.fired = {k: max(p.fired.get(k, 0), anon.fired.get(k, 0)) for k in {*p.fired, *anon.fired}}
    _merge_consent(p, anon)
    p.seen = _merge_seen(p.seen, anon.seen, key, p.last_seen)
    return p


def _merge_times(p: Profile, anon: Profile) -> None:
    firsts = [t for t in (p.first_seen, anon.first_seen) if t]
    p.first_seen = min(firsts, default=0)
    p.last_seen = max(p.last_seen, anon.last_seen)
    p.cart_changed = max(p.cart_changed, anon.cart_changed)
    p.last_purchase = max(p.last_purchase, anon.last_purchase)
    p.last_checkout = max(p.last_checkout, anon.last_checkout)
    if not p.last_order:
        p.last_order = anon.last_order


def _merge_counts(p: Profile, anon: Profile) -> None:
    for etype, n in anon.counts.items():
        p.counts[etype] = p.counts.get(etype, 0) + n
    p.orders += anon.orders
    for currency, (amount, orders) in anon.spend.items():
        add_spend(p, currency, amount, orders)
    if anon.locale and anon.locale_at >= p.locale_at:
        p.locale, p.locale_at = anon.locale, anon.locale_at
    p.carts_started += anon.carts_started
    p.carts_converted += anon.carts_converted


def _interleave(
    mine: list[tuple[str, int]], theirs: list[tuple[str, int]], limit: int
) -> list[tuple[str, int]]:
    """Both newest-first lists as one, newest first, each item once (at its newest time)."""
    newest: dict[str, int] = {}
    for item, ts in (*mine, *theirs):
        if ts > newest.get(item, -1):
            newest[item] = ts
    ranked = sorted(newest.items(), key=lambda entry: (-entry[1], entry[0]))
    return ranked[:limit]


def _merge_history(
    mine: dict[str, tuple[int, int]], theirs: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """Per item the newer minute and the summed count (capped); the newest HISTORY_ITEMS stay
    when both hold more than the fold keeps."""
    out = dict(mine)
    for item, (minute, count) in theirs.items():
        last, had = out.get(item, (minute, 0))
        out[item] = (max(last, minute), min(had + count, HISTORY_COUNT_MAX))
    if len(out) <= HISTORY_ITEMS + HISTORY_SLACK:
        return out
    kept = sorted(out.items(), key=lambda entry: (-entry[1][0], entry[0]))[:HISTORY_ITEMS]
    return dict(kept)


def _merge_cart(mine: dict[str, int], theirs: dict[str, int]) -> dict[str, int]:
    """Quantities add (each line capped); past CART_LINES lines the first added go, as in the
    fold: the user's own oldest lines first, then the anonymous ones."""
    cart = dict(mine)
    for item, quantity in theirs.items():
        cart[item] = min(CART_QUANTITY, cart.get(item, 0) + quantity)
    while len(cart) > CART_LINES:
        del cart[next(iter(cart))]
    return cart


def _merge_scores(mine: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    scores = dict(mine)
    for key, weight in theirs.items():
        scores[key] = round(scores.get(key, 0.0) + weight, 4)
    if len(scores) <= TOP_AFFINITIES:
        return scores
    strongest = sorted(scores.items(), key=lambda entry: (-entry[1], entry[0]))
    return dict(strongest[:TOP_AFFINITIES])


def _merge_spans(mine: list[list[int]], theirs: list[list[int]]) -> tuple[list[list[int]], int]:
    """Both session interval lists as one (intervals closer than a gap joined), and how many
    joins that took (each join is one session fewer than the two counts summed)."""
    out: list[list[int]] = []
    joined = 0
    for start, end in sorted([*mine, *theirs]):
        if out and start <= out[-1][1] + SESSION_GAP_MS:
            out[-1][1] = max(out[-1][1], end)
            joined += 1
        else:
            out.append([start, end])
    return out, joined


def _merge_consent(p: Profile, anon: Profile) -> None:
    """Records combined per purpose; a withdrawal on either side stays a withdrawal."""
    if anon.consent is None and not anon.consent_log:
        return
    consent = dict(p.consent or {})
    for purpose in PURPOSES:
        history = p.consent_log.get(purpose, ())
        for record in anon.consent_log.get(purpose, ()):
            history = merged(history, record)
        values = [c[purpose] for c in (p.consent, anon.consent) if c and purpose in c]
        if not values and not history:
            continue
        withdrawn = False in values
        if withdrawn and history and history[0][0]:
            withdrawal: Record = (False, history[0][1], MERGE_SOURCE, "")
            history = merged(history, withdrawal)  # at equal times a withdrawal comes first
        if history:
            p.consent_log[purpose] = history
        consent[purpose] = not withdrawn and bool(history[0][0] if history else True)
    p.consent = consent


def _merge_seen(mine: SeenIds, theirs: SeenIds, key: int, newest_ms: int) -> SeenIds:
    """Both dedup memories and the merge's own key, oldest first, within the fold's bounds."""
    ats: dict[int, int] = {}
    for seen in (mine, theirs):
        for k, at in zip(_ints("Q", seen.keys_bytes()), _ints("I", seen.ats_bytes()), strict=False):
            ats[k] = max(at, ats.get(k, 0))
    ats[key] = max(0, newest_ms // 1000)
    order = sorted(ats.items(), key=lambda entry: entry[1])
    out = SeenIds.from_arrays(array("Q", [k for k, _ in order]), array("I", [a for _, a in order]))
    out.forget((newest_ms - DEDUP_WINDOW_MS) // 1000, DEDUP_IDS, DEDUP_HARD_CAP)
    return out


def _ints(code: str, raw: bytes) -> array[int]:
    values = array(code)
    values.frombytes(raw[: len(raw) - len(raw) % values.itemsize])
    return values
