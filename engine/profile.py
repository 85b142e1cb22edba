"""The per-user profile and the pure fold `apply(profile, event, product) -> profile`.

No I/O, no clocks: everything time-related comes from event times. The stream adapter looks up the
event's product in the catalog (for its category and brand) and passes it in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from engine.catalog import Product
from engine.consent import PURPOSES, Record, legacy_history, merged, record_of
from engine.dedup import SeenIds
from engine.events import Event
from engine.locales import valid_locale

RECENT_ITEMS = 30  # most recent distinct items kept, newest first
# The long history (issue 17): the newest HISTORY_ITEMS distinct items with the minute of their
# last signal and how many signals they had; up to HISTORY_SLACK more before the oldest go (one
# sort per HISTORY_SLACK new items instead of one per item).
HISTORY_ITEMS = 200
HISTORY_SLACK = 50
HISTORY_COUNT_MAX = 65_535
MINUTE_MS = 60_000
CART_LINES = 200  # distinct items in a cart; adding one more drops the line added first
CART_QUANTITY = 1_000_000  # units of one item in a cart (engine.events.MAX_QUANTITY per event)
AFFINITY_KEY = 128  # characters of a category or brand kept as an affinity key
ORDER_ID = 128  # characters of an order id kept to tell orders apart
RECENT_PURCHASES = 50
# Spend per currency (issue 19 item 6): never added across currencies; at most SPEND_CURRENCIES
# kept (the one with the fewest orders and least spend makes room). "" holds what a purchase
# without any currency spent, and the spend of a profile stored before currencies were kept.
SPEND_CURRENCIES = 8
TOP_AFFINITIES = 30
DAY_MS = 86_400_000
# Idempotency memory per user: at least the last DEDUP_IDS event ids or every id of the last
# DEDUP_WINDOW_MS of event time, whichever holds more; DEDUP_HARD_CAP bounds a runaway user.
# Ids are forgotten a block at a time (engine.dedup.BLOCK): up to a block more may be kept.
DEDUP_IDS = 1000
DEDUP_WINDOW_MS = 30 * DAY_MS
DEDUP_HARD_CAP = 20_000
SESSION_GAP_MS = 30 * 60 * 1000
# Session intervals are kept this far behind the newest event so out-of-order events (accepted up
# to the lateness bound, 7 days by default) still merge or split sessions exactly.
SESSION_WINDOW_MS = 8 * DAY_MS

# The first element of a packed profile. 3 added the consent records (`consent_log`) at the end;
# format 2 (without them) is still read.
_PACKED_FORMAT = 3
_FORMAT_WITHOUT_CONSENT_LOG = 2
PACK_FORMAT = _PACKED_FORMAT  # what `pack` writes: recorded in the data dir (persona/state_dir.py)

# How much each kind of signal says about a shopper's taste.
AFFINITY_WEIGHTS: dict[str, float] = {
    "product_view": 1.0,
    "category_view": 0.5,
    "add_to_cart": 3.0,
    "purchase": 5.0,
    "like": 2.0,
    "share": 3.0,
    "comment": 2.0,
    "follow": 1.0,
    "mention": 2.0,
}
# Events that put an item into "recent items" (what the recommender starts from).
RECENT_ITEM_TYPES = frozenset(
    {"product_view", "add_to_cart", "purchase", "like", "share", "comment", "mention"}
)
# A `purchase` whose props carry one of these set to true takes a purchase back (a cancelled
# order line, a return): the contract has no event type for it, and props are free-form.
REVERSAL_FLAGS = ("cancelled", "returned")


def event_key(event_id: str) -> int:
    """A stable 64-bit digest of an event id: the dedup memory stores these, not the ids."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


@dataclass(slots=True)
class Profile:
    user_id: str
    version: int = 0  # number of events applied; changes whenever the profile does
    first_seen: int = 0
    last_seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    recent: list[tuple[str, int]] = field(default_factory=list)  # (item_id, ts), newest first
    cart: dict[str, int] = field(default_factory=dict)
    cart_changed: int = 0
    purchased: list[tuple[str, int]] = field(default_factory=list)  # (item_id, ts), newest first
    orders: int = 0
    last_order: str = ""
    monetary: float = 0.0
    last_purchase: int = 0
    sessions: int = 0
    spans: list[list[int]] = field(default_factory=list)  # recent sessions [start, end], sorted
    carts_started: int = 0
    carts_converted: int = 0
    categories: dict[str, float] = field(default_factory=dict)
    brands: dict[str, float] = field(default_factory=dict)
    consent: dict[str, bool] | None = None  # purpose -> current value (consent_log's newest)
    last_checkout: int = 0  # newest checkout or purchase (cancels an abandoned-cart trigger)
    fired: dict[str, int] = field(default_factory=dict)  # trigger -> marker of its last firing
    seen: SeenIds = field(default_factory=SeenIds, repr=False)  # event_key()s and their ts (s)
    # purpose -> engine.consent records, newest first by event time (at most consent.HISTORY);
    # tuples, never changed in place, so copies may share them
    consent_log: dict[str, tuple[Record, ...]] = field(default_factory=dict)
    # item -> (minute of its newest signal, signals counted): the long history (HISTORY_ITEMS)
    history: dict[str, tuple[int, int]] = field(default_factory=dict)
    # the newest valid `props.locale` (BCP 47, canonical case) by event time, and that time
    locale: str = ""
    locale_at: int = 0
    # currency -> (amount spent, orders): `monetary` is the main currency's amount (main_currency)
    spend: dict[str, tuple[float, int]] = field(default_factory=dict)

    # -- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "u": self.user_id,
            "v": self.version,
            "f": self.first_seen,
            "l": self.last_seen,
            "c": self.counts,
            "r": [list(x) for x in self.recent],
            "k": self.cart,
            "kc": self.cart_changed,
            "p": [list(x) for x in self.purchased],
            "o": self.orders,
            "lo": self.last_order,
            "m": self.monetary,
            "lp": self.last_purchase,
            "s": self.sessions,
            "ss": self.spans,
            "cs": self.carts_started,
            "cc": self.carts_converted,
            "ca": self.categories,
            "b": self.brands,
            "co": self.consent,
            "lc": self.last_checkout,
            "fi": self.fired,
            "e": self.seen.keys_bytes(),
            "ea": self.seen.ats_bytes(),
            "cl": self.consent_log,
            "h": _pack_history(self.history),
            "lg": [self.locale, self.locale_at],
            "sp": self.spend,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        return cls(
            user_id=d["u"],
            version=d["v"],
            first_seen=d["f"],
            last_seen=d["l"],
            counts=d["c"],
            recent=[(str(a), int(b)) for a, b in d["r"]],
            cart=d["k"],
            cart_changed=d["kc"],
            purchased=[(str(a), int(b)) for a, b in d["p"]],
            orders=d["o"],
            last_order=d["lo"],
            monetary=d["m"],
            last_purchase=d["lp"],
            sessions=d["s"],
            spans=[list(span) for span in d["ss"]],
            carts_started=d["cs"],
            carts_converted=d["cc"],
            categories=d["ca"],
            brands=d["b"],
            consent=d["co"],
            last_checkout=d.get("lc", 0),
            fired=d.get("fi", {}),
            seen=SeenIds.from_bytes(d["e"], d["ea"]),
            consent_log=_consent_log(d.get("cl")),
            history=_history_or_seed(d.get("h"), d["r"], d["p"]),
            locale=str(d.get("lg", ("", 0))[0]),
            locale_at=int(d.get("lg", ("", 0))[1]),
            spend=_spend_or_seed(d.get("sp"), d["m"], d["o"]),
        )

    def pack(self) -> bytes:
        """The stored form: a msgpack array, fields by position after a format tag (a map with
        short keys, `to_dict`, was the format before it and is still read)."""
        return bytes(
            msgpack.packb(
                [
                    _PACKED_FORMAT,
                    self.user_id,
                    self.version,
                    self.first_seen,
                    self.last_seen,
                    self.counts,
                    self.recent,
                    self.cart,
                    self.cart_changed,
                    self.purchased,
                    self.orders,
                    self.last_order,
                    self.monetary,
                    self.last_purchase,
                    self.sessions,
                    self.spans,
                    self.carts_started,
                    self.carts_converted,
                    self.categories,
                    self.brands,
                    self.consent,
                    self.last_checkout,
                    self.fired,
                    self.seen.keys_bytes(),
                    self.seen.ats_bytes(),
                    self.consent_log,
                    _pack_history(self.history),
                    self.locale,
                    self.locale_at,
                    self.spend,
                ],
                use_bin_type=True,
            )
        )

    @classmethod
    def unpack(cls, raw: bytes) -> Profile:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=False)
        if isinstance(data, dict):  # the map format of earlier versions (arrays as tuples)
            return cls.from_dict(data)
        if not data or data[0] not in (_PACKED_FORMAT, _FORMAT_WITHOUT_CONSENT_LOG):
            raise ValueError(f"unknown profile format {data[:1]!r}")
        # Slot by slot, as `copy` does: the dataclass __init__ costs more than the decoding.
        new = object.__new__(cls)
        (
            _,
            new.user_id,
            new.version,
            new.first_seen,
            new.last_seen,
            new.counts,
            recent,
            new.cart,
            new.cart_changed,
            purchased,
            new.orders,
            new.last_order,
            new.monetary,
            new.last_purchase,
            new.sessions,
            spans,
            new.carts_started,
            new.carts_converted,
            new.categories,
            new.brands,
            new.consent,
            new.last_checkout,
            new.fired,
            seen,
            seen_at,
            *tail,  # format 3: consent_log, history (issue 17), locale, its time, spend (issue 19)
        ) = data
        new.consent_log = _consent_log(tail[0]) if tail else {}
        new.recent = list(recent)  # (item_id, ts) tuples already: msgpack arrays as tuples
        new.purchased = list(purchased)
        new.history = _history_or_seed(tail[1] if len(tail) > 1 else None, recent, purchased)
        new.locale, new.locale_at = (tail[2], tail[3]) if len(tail) > 3 else ("", 0)
        new.spend = _spend_or_seed(tail[4] if len(tail) > 4 else None, new.monetary, new.orders)
        new.spans = [list(span) for span in spans]
        new.seen = SeenIds.from_bytes(seen, seen_at)
        return new

    # -- derived views ---------------------------------------------------------------------------
    @property
    def recent_items(self) -> list[str]:
        return [item for item, _ in self.recent]

    @property
    def last_session_start(self) -> int:
        return self.spans[-1][0] if self.spans else 0

    def has_seen(self, event_id: str) -> bool:
        return event_key(event_id) in self.seen

    def consents_to(self, purpose: str, default: bool) -> bool:
        """Whether the user allows `purpose`; `default` applies where they never said."""
        if self.consent is None or purpose not in self.consent:
            return default
        return bool(self.consent[purpose])

    def copy(self) -> Profile:
        """A copy sharing nothing mutable with this profile. Built slot by slot:
        `dataclasses.replace` re-runs `__init__` and cost three quarters of an `apply`."""
        new = object.__new__(Profile)
        self._values_into(new)
        new.counts = dict(self.counts)
        new.recent = list(self.recent)
        new.cart = dict(self.cart)
        new.purchased = list(self.purchased)
        new.categories = dict(self.categories)
        new.brands = dict(self.brands)
        new.consent = None if self.consent is None else dict(self.consent)
        new.fired = dict(self.fired)
        new.spans = [list(s) for s in self.spans]
        new.seen = self.seen.copy()  # shares its frozen blocks: O(1) in the ids remembered
        new.consent_log = dict(self.consent_log)
        new.history = dict(self.history)
        new.spend = dict(self.spend)  # (amount, orders) tuples: never changed in place
        return new

    def marked(self, trigger: str, marker: int) -> Profile:
        """This profile with `fired[trigger] = marker`: a new profile that shares every
        container but `fired` with this one. Safe because no profile is changed in place once
        a function has returned it (each change starts from `copy()`); a trigger's mark costs a
        third of a `copy()` (0.5 against 1.5 us), paid for most users of every batch."""
        new = object.__new__(Profile)
        self._values_into(new)
        new.counts = self.counts
        new.recent = self.recent
        new.cart = self.cart
        new.purchased = self.purchased
        new.categories = self.categories
        new.brands = self.brands
        new.consent = self.consent
        new.fired = {**self.fired, trigger: marker}
        new.spans = self.spans
        new.seen = self.seen
        new.consent_log = self.consent_log
        new.history = self.history
        new.spend = self.spend
        return new

    def _values_into(self, new: Profile) -> None:
        """Set `new`'s fields that hold no container (numbers and strings) to this profile's:
        the part `copy` and `marked` share (measured: copy 1.29 us with or without the call,
        marked 0.47 against 0.45 us)."""
        new.user_id = self.user_id
        new.version = self.version
        new.first_seen = self.first_seen
        new.last_seen = self.last_seen
        new.cart_changed = self.cart_changed
        new.orders = self.orders
        new.last_order = self.last_order
        new.monetary = self.monetary
        new.last_purchase = self.last_purchase
        new.sessions = self.sessions
        new.carts_started = self.carts_started
        new.carts_converted = self.carts_converted
        new.last_checkout = self.last_checkout
        new.locale = self.locale
        new.locale_at = self.locale_at

    @property
    def main_currency(self) -> str:
        """The currency the user spends in most: most orders, then the larger amount, then the
        code ("" for spend without a currency, or from before currencies were kept)."""
        return _main_currency(self.spend)


def _consent_log(raw: Any) -> dict[str, tuple[Record, ...]]:
    """Stored consent records as tuples (msgpack may give lists)."""
    if not raw:
        return {}
    return {
        str(k): tuple((bool(r[0]), int(r[1]), str(r[2]), str(r[3])) for r in v)
        for k, v in raw.items()
    }


def _spend_or_seed(raw: Any, monetary: float, orders: int) -> dict[str, tuple[float, int]]:
    """The stored spend per currency; a profile stored before it existed keeps its spend
    under "" (its currency is unknown), so its `monetary` stays what it was."""
    if raw is None:
        return {"": (float(monetary), int(orders))} if monetary or orders else {}
    return {str(code): (float(v[0]), int(v[1])) for code, v in raw.items()}


def _main_currency(spend: dict[str, tuple[float, int]]) -> str:
    if not spend:
        return ""
    return min(spend, key=lambda code: (-spend[code][1], -spend[code][0], code))


def _pack_history(history: dict[str, tuple[int, int]]) -> tuple[Any, ...]:
    """The stored history: (newest minute, items, minutes before the newest, counts), or ()."""
    if not history:
        return ()
    newest = max(minute for minute, _count in history.values())
    return (
        newest,
        list(history),
        [newest - minute for minute, _count in history.values()],
        [count for _minute, count in history.values()],
    )


def _history_or_seed(raw: Any, recent: Any, purchased: Any) -> dict[str, tuple[int, int]]:
    """The stored history; a profile stored before it existed gets its recent items and
    purchases, each counted once."""
    if raw is None:
        seeded: dict[str, tuple[int, int]] = {}
        for item, ts in (*purchased, *recent):
            minute = int(ts) // MINUTE_MS
            seeded[str(item)] = (max(minute, seeded.get(str(item), (minute, 1))[0]), 1)
        return seeded
    if not raw:
        return {}
    newest, items, ages, counts = raw
    return {
        str(item): (newest - age, count)
        for item, age, count in zip(items, ages, counts, strict=True)
    }


def held_items(profile: Profile) -> set[str]:
    """Every item the profile holds the user had: bought (whenever), recent, in the long history
    or in the cart (what recommendations and merchandising pins leave out)."""
    return (
        {item for item, _ts in profile.purchased}
        | {item for item, _ts in profile.recent}
        | profile.history.keys()
        | set(profile.cart)
    )


def history_newest(profile: Profile) -> list[tuple[str, int]]:
    """The long history as (item_id, ms of its newest signal's minute), newest first, ties by id:
    what the recommenders read."""
    ranked = sorted(profile.history.items(), key=_newest_first)
    return [(item, minute * MINUTE_MS) for item, (minute, _count) in ranked]


def _newest_first(entry: tuple[str, tuple[int, int]]) -> tuple[int, str]:
    return -entry[1][0], entry[0]


def readable_profiles(rows: Iterable[bytes], n: int) -> list[Profile]:
    """Up to `n` profiles of packed rows, passing over rows that do not unpack (a changelog is
    open to producers: one such row made every sample of the table fail)."""
    found: list[Profile] = []
    for raw in rows:
        if len(found) >= n:
            break
        try:
            found.append(Profile.unpack(raw))
        except Exception:
            continue
    return found


def new_profile(user_id: str) -> Profile:
    return Profile(user_id=user_id)


def _bump(scores: dict[str, float], key: str, weight: float) -> None:
    if not key or weight <= 0:
        return
    scores[key] = round(scores.get(key, 0.0) + weight, 4)
    if len(scores) > TOP_AFFINITIES:
        del scores[min(scores, key=scores.__getitem__)]


def _push_recent(items: list[tuple[str, int]], item_id: str, ts: int, limit: int) -> None:
    """Insert (item, ts) keeping newest-first order by event time and one entry per item."""
    for i, (existing, existing_ts) in enumerate(items):
        if existing == item_id:
            if existing_ts >= ts:
                return  # a newer sighting of the same item is already recorded
            del items[i]
            break
    pos = 0
    while pos < len(items) and items[pos][1] > ts:
        pos += 1
    items.insert(pos, (item_id, ts))
    del items[limit:]


def _push_history(history: dict[str, tuple[int, int]], item: str, ts: int) -> None:
    """Count a signal for `item` at `ts` into the long history; past HISTORY_ITEMS +
    HISTORY_SLACK items, only the HISTORY_ITEMS newest stay."""
    minute = ts // MINUTE_MS
    last, count = history.get(item, (minute, 0))
    history[item] = (max(last, minute), min(count + 1, HISTORY_COUNT_MAX))
    if len(history) > HISTORY_ITEMS + HISTORY_SLACK:
        kept = sorted(history.items(), key=_newest_first)[:HISTORY_ITEMS]
        history.clear()
        history.update(kept)


def apply(profile: Profile | None, event: Event, product: Product | None = None) -> Profile:
    """Fold one event into a profile and return the new profile. Repeated event ids change nothing
    (the same object is returned)."""
    key = event_key(event.event_id)
    if profile is None:
        p = new_profile(event.user_id)  # nothing to share with: no copy of an empty profile
    elif key in profile.seen:
        return profile
    else:
        p = profile.copy()
    _remember(p, key, event.ts)
    p.version += 1
    etype = event.type
    ts = event.ts
    p.counts[etype] = p.counts.get(etype, 0) + 1
    if p.first_seen == 0 or ts < p.first_seen:
        p.first_seen = ts
    p.last_seen = max(p.last_seen, ts)
    _track_session(p, ts)
    if "locale" in event.props:
        _note_locale(p, event.props["locale"], ts)

    if etype == "consent":
        _apply_consent(p, event)
        return p
    if is_reversal(event):
        _apply_reversal(p, event, product)
        return p

    item = event.item_id
    if item and etype in RECENT_ITEM_TYPES:
        _push_recent(p.recent, item, ts, RECENT_ITEMS)
        _push_history(p.history, item, ts)

    weight = AFFINITY_WEIGHTS.get(etype, 0.0)
    category = str(event.props.get("category") or (product.category if product else ""))
    brand = str(event.props.get("brand") or (product.brand if product else ""))
    category, brand = category[:AFFINITY_KEY], brand[:AFFINITY_KEY]
    _bump(p.categories, category, weight)
    _bump(p.brands, brand, weight)

    if etype == "add_to_cart" and item:
        if not p.cart:
            p.carts_started += 1
        _add_to_cart(p.cart, item, event.quantity)
        p.cart_changed = max(p.cart_changed, ts)
    elif etype == "remove_from_cart" and item:
        left = p.cart.get(item, 0) - event.quantity
        if left > 0:
            p.cart[item] = left
        else:
            p.cart.pop(item, None)
        p.cart_changed = max(p.cart_changed, ts)
    if etype in ("checkout", "purchase"):
        p.last_checkout = max(p.last_checkout, ts)
    if etype == "purchase" and item:
        _apply_purchase(p, event, product)
    return p


def _apply_consent(p: Profile, event: Event) -> None:
    """Record the event's value for each purpose it names; each purpose's value becomes its
    newest record's by event time (engine.consent), whatever order the events arrive in."""
    consent = dict(p.consent or {})
    log = p.consent_log
    for purpose in PURPOSES:
        if purpose in event.props:
            record = record_of(event.props[purpose], event.ts, event.source, event.props)
            history = log.get(purpose) or legacy_history(consent.get(purpose))
            log[purpose] = merged(history, record)
            consent[purpose] = log[purpose][0][0]
    p.consent = consent


def _add_to_cart(cart: dict[str, int], item: str, quantity: int) -> None:
    """Add units of an item, each line capped at CART_QUANTITY and the cart at CART_LINES lines
    (the oldest line makes room): no producer can grow a profile without bound."""
    cart[item] = min(CART_QUANTITY, cart.get(item, 0) + quantity)
    while len(cart) > CART_LINES:
        del cart[next(iter(cart))]


def _remember(p: Profile, key: int, ts: int) -> None:
    """Add an event id to the dedup memory and forget what both bounds allow forgetting."""
    p.seen.add(key, max(0, ts // 1000))
    horizon = (max(p.last_seen, ts) - DEDUP_WINDOW_MS) // 1000
    p.seen.forget(horizon, DEDUP_IDS, DEDUP_HARD_CAP)


def _track_session(p: Profile, ts: int) -> None:
    """Sessions by event time: events closer than SESSION_GAP_MS belong to one session, whatever
    order they arrive in. An event can start a session, extend one, or bridge two into one."""
    spans = p.spans
    if spans:
        last = spans[-1]
        if last[0] <= ts <= last[1] + SESSION_GAP_MS:
            # The usual case, an event in or just after the newest session: it extends that
            # session and touches no other (sessions lie more than a gap apart).
            if ts > last[1]:
                last[1] = ts
            _drop_old_sessions(p)
            return
    near = [s for s in spans if s[0] - SESSION_GAP_MS <= ts <= s[1] + SESSION_GAP_MS]
    if not near:
        spans.append([ts, ts])
        spans.sort()
        p.sessions += 1
    else:
        merged = [min(near[0][0], ts), max(near[-1][1], ts)]
        p.sessions -= len(near) - 1
        p.spans = sorted([s for s in spans if s not in near] + [merged])
    _drop_old_sessions(p)


def _drop_old_sessions(p: Profile) -> None:
    cutoff = p.last_seen - SESSION_WINDOW_MS
    spans = p.spans
    if spans and spans[0][1] < cutoff:
        p.spans = [s for s in spans if s[1] >= cutoff]


def _apply_purchase(p: Profile, event: Event, product: Product | None) -> None:
    item = str(event.item_id)
    order = str(event.props.get("order_id") or event.session_id or f"t{event.ts // 60000}")
    order = order[:ORDER_ID]
    new_order = order != p.last_order
    if new_order:
        p.orders += 1
        p.last_order = order
        if p.cart:
            p.carts_converted += 1
    price, currency = _paid(event, product)
    add_spend(p, currency, price * event.quantity, int(new_order))
    p.last_purchase = max(p.last_purchase, event.ts)
    _push_recent(p.purchased, item, event.ts, RECENT_PURCHASES)
    left = p.cart.get(item, 0) - event.quantity
    if left > 0:
        p.cart[item] = left
    else:
        p.cart.pop(item, None)
    p.cart_changed = max(p.cart_changed, event.ts)


def is_reversal(event: Event) -> bool:
    """Whether the event takes a purchase back: a `purchase` with `props.cancelled` or
    `props.returned` true (the boolean, not a string that looks like one)."""
    return event.type == "purchase" and any(event.props.get(f) is True for f in REVERSAL_FLAGS)


def _apply_reversal(p: Profile, event: Event, product: Product | None) -> None:
    """A cancelled or returned purchase: the item leaves the user's purchases (unless they bought
    it again after the reversal's time) and its price leaves their spend. It adds no taste, no
    recent item and no order."""
    item = str(event.item_id)
    p.purchased = [(i, ts) for i, ts in p.purchased if i != item or ts > event.ts]
    price, currency = _paid(event, product)
    if currency not in p.spend:
        currency = ""  # bought before currencies were kept (or with none)
    if currency in p.spend:
        add_spend(p, currency, -price * event.quantity, 0)


def _note_locale(p: Profile, raw: Any, ts: int) -> None:
    """Keep the event's `props.locale` when it is a BCP 47 tag and the newest by event time
    (an invalid tag is ignored: props are free-form)."""
    if ts < p.locale_at:
        return
    tag = valid_locale(raw)
    if tag is not None:
        p.locale, p.locale_at = tag, ts


def _paid(event: Event, product: Product | None) -> tuple[float, str]:
    """The unit price of a purchase line and its currency: the event's (its `currency`, else
    the product's), else the catalog product's; "" when no currency is known."""
    if event.price is not None:
        return event.price, event.currency or (product.currency if product else "")
    if product is not None:
        return product.price, product.currency
    return 0.0, event.currency or ""


def add_spend(p: Profile, currency: str, amount: float, orders: int) -> None:
    """Add to one currency's spend (never below 0) and its orders; `monetary` follows the
    main currency. Past SPEND_CURRENCIES the smallest other currency goes."""
    spent, counted = p.spend.get(currency, (0.0, 0))
    p.spend[currency] = (max(0.0, round(spent + amount, 2)), counted + orders)
    while len(p.spend) > SPEND_CURRENCIES:
        others = [code for code in p.spend if code != currency]
        del p.spend[min(others, key=lambda code: (p.spend[code][1], p.spend[code][0], code))]
    p.monetary = p.spend[_main_currency(p.spend)][0]


def fold(events: list[Event], profile: Profile | None = None) -> Profile | None:
    """Apply many events in order (convenience for training and tests)."""
    for event in events:
        profile = apply(profile, event)
    return profile
