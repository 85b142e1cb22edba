"""Best-seller scores: what one event adds to its items' popularity, and how the sums decay. Pure.

A user's *stake* in an item is a function of their profile alone: PURCHASE_WEIGHT while the item
is among their recent purchases (`Profile.purchased`), CART_WEIGHT while it is only in their cart,
nothing otherwise, whatever the quantities and however many events or event ids they send. A stake
counts from an anchor time (the purchase's time; the cart's last change) and halves every
half-life of event time after it.

An event contributes the change it makes to its user's stakes (`contributions(before, after)`:
the stakes after it minus the stakes before it, each at its anchor), so an item's popularity is at
every moment the decayed sum of its users' current stakes:

- one user adds at most PURCHASE_WEIGHT to an item: a quantity of 1,000,000 counts as 1 unit;
- a cancellation or return (a `purchase` with `props.cancelled` or `props.returned` true, which
  `engine.profile.apply` takes out of the user's purchases) takes the stake back exactly, decay
  included; so does an item leaving the cart, or the user's 50 recent purchases;
- scores decay with event time, never wall time: a replay of last year ranks as it would have then.

A `Score` is a decayed sum held as (value, ts): `value` is the sum as of event time `ts`. Decay
keeps the order of two items as time passes, so ranking needs no clock: `rank_key` (log2 of the
value plus ts in half-lives) compares scores held at different times. The popularity table stores
`pack()`: the value, its time and that rank key, so readers rank without knowing the half-life.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from engine.events import Event
from engine.profile import Profile

PURCHASE_WEIGHT = 1.0  # a buyer's stake in an item, whatever the quantity
CART_WEIGHT = 0.2  # a shopper's stake in an item in their cart (not bought)
HALF_LIFE_DAYS = 14.0  # event time after which a stake counts half
DAY_MS = 86_400_000
HALF_LIFE_MS = HALF_LIFE_DAYS * DAY_MS
# Below this a sum is zero (what is left of exact take-backs after float rounding).
EPSILON = 1e-9
# Bounds of a score read from a topic or table (anything else is not ours and is ignored).
MAX_VALUE = 1e12
MAX_TS = 4_102_444_800_000  # 2100-01-01, the bound of engine.events
# Event types that can change a stake: cart lines and purchases (views say little about sales).
STAKE_TYPES = frozenset({"add_to_cart", "remove_from_cart", "purchase"})

Stake = tuple[float, int]  # (weight, anchor time ms)
Contribution = tuple[str, float, int]  # (item, weight, anchor time ms)


@dataclass(frozen=True, slots=True)
class Score:
    """A decayed sum: `value` as of event time `ts` (ms)."""

    value: float = 0.0
    ts: int = 0

    def plus(self, value: float, ts: int, half_life_ms: float = HALF_LIFE_MS) -> Score:
        """This sum with `value` (held at `ts`) added, as of the newer of both times."""
        newest = max(self.ts, ts)
        total = _decay(self.value, newest - self.ts, half_life_ms) + _decay(
            value, newest - ts, half_life_ms
        )
        return Score(0.0 if abs(total) < EPSILON else total, newest)

    def rank_key(self, half_life_ms: float = HALF_LIFE_MS) -> float | None:
        """What orders scores held at different times (greater ranks first); None: not ranked."""
        if self.value <= EPSILON:
            return None
        return math.log2(self.value) + self.ts / half_life_ms

    def pack(self, half_life_ms: float = HALF_LIFE_MS) -> bytes:
        """`value ts rank_key` as ASCII (`rank_key` is `-` when the score is not ranked)."""
        key = self.rank_key(half_life_ms)
        return f"{self.value!r} {self.ts} {'-' if key is None else repr(key)}".encode()

    @staticmethod
    def unpack(raw: bytes | None) -> Score | None:
        """The score `pack` wrote; None for anything else (the quantity sums of versions before
        it, which had no time, included: those sums are dropped)."""
        parts = _fields(raw)
        if parts is None or len(parts) != 3:
            return None
        try:
            value, ts = float(parts[0]), int(parts[1])
        except ValueError:
            return None
        if not (math.isfinite(value) and abs(value) <= MAX_VALUE and 0 <= ts <= MAX_TS):
            return None
        return Score(value, ts)


def rank_key(raw: bytes | None) -> float | None:
    """The rank key a packed score carries; None when it is not ranked or not a packed score."""
    parts = _fields(raw)
    if parts is None or len(parts) != 3 or parts[2] == "-":
        return None
    try:
        key = float(parts[2])
    except ValueError:
        return None
    return key if math.isfinite(key) else None


def _fields(raw: bytes | None) -> list[str] | None:
    if not raw or len(raw) > 100:
        return None
    try:
        return raw.decode("ascii").split(" ")
    except UnicodeDecodeError:
        return None


def _decay(value: float, age_ms: int, half_life_ms: float) -> float:
    return value * 2.0 ** (-age_ms / half_life_ms) if value else 0.0


Holdings = tuple[dict[str, int], dict[str, int], int]  # purchases (item -> ts), cart, cart time


def holdings(profile: Profile | None) -> Holdings:
    """What a user's stakes derive from: their recent purchases, cart lines and cart time."""
    if profile is None:
        return {}, {}, 0
    return dict(profile.purchased), profile.cart, profile.cart_changed  # one entry per item


def stakes(held: Holdings, items: set[str]) -> dict[str, Stake]:
    """The user's stake in each of `items` (items without one are left out)."""
    bought, cart, cart_time = held
    out: dict[str, Stake] = {}
    for item in items:
        if item in bought:
            out[item] = (PURCHASE_WEIGHT, bought[item])
        elif item in cart:
            out[item] = (CART_WEIGHT, cart_time)
    return out


def contributions(
    before: Profile | None, after: Profile | None, event: Event
) -> Iterator[Contribution]:
    """(item, weight, anchor) triples that turn the popularity sums of `before` into those of
    `after`, the profiles before and after `event`: the stakes after it, less those before it."""
    if event.type not in STAKE_TYPES or before is after:
        return
    old_held, new_held = holdings(before), holdings(after)
    items = _candidates(old_held, new_held, event)
    old, new = stakes(old_held, items), stakes(new_held, items)
    for item in old.keys() | new.keys():
        if old.get(item) != new.get(item):
            if item in old:
                yield item, -old[item][0], old[item][1]
            if item in new:
                yield item, new[item][0], new[item][1]


def _candidates(old: Holdings, new: Holdings, event: Event) -> set[str]:
    """The items whose stake the event may have changed: its own, the purchases it added, moved
    or pushed out, the cart lines it added or dropped, and every cart line when the cart's time
    (their anchor) moved."""
    out = {event.item_id} if event.item_id else set()
    out.update(item for item, _ in old[0].items() ^ new[0].items())
    if old[2] != new[2]:
        out.update(old[1], new[1])
    else:
        out.update(old[1].keys() ^ new[1].keys())
    return out


class Tally:
    """The contributions of a batch of events summed per item (what the fold sends on)."""

    def __init__(self, half_life_ms: float = HALF_LIFE_MS) -> None:
        self.half_life_ms = half_life_ms
        self.scores: dict[str, Score] = {}

    def add(self, contributed: Iterable[Contribution]) -> None:
        for item, weight, ts in contributed:
            self.scores[item] = self.scores.get(item, Score()).plus(weight, ts, self.half_life_ms)

    def items(self) -> Iterator[tuple[str, Score]]:
        return iter(self.scores.items())


def merge(stored: bytes | None, deltas: Iterable[Score]) -> bytes:
    """An item's stored score (as `Score.pack` wrote it; anything else counts as none) with
    `deltas`, the contributions that arrived for it, added: the value to store."""
    total = Score.unpack(stored) or Score()
    for delta in deltas:
        total = total.plus(delta.value, delta.ts)
    return total.pack()
