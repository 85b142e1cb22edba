"""Churn features computed from a profile at a point in (event) time. Pure.

The order of `FEATURE_NAMES` is the contract between the engine and every churn model: a model's
artifact records the names it was trained on and the loader refuses a mismatch.

Money is never added across currencies (issue 19 item 6): `monetary` and `avg_order_value` are the
user's spend and orders in their main currency (`Profile.main_currency`: the currency of most of
their orders, then of the larger amount), so a purchase in another currency moves neither. A shop
that sells in one currency sees what it saw before; a profile stored before currencies were kept
keeps its spend (and orders) as its main currency's.
"""

from __future__ import annotations

import math

from engine.profile import Profile

DAY_MS = 86_400_000

FEATURE_NAMES: tuple[str, ...] = (
    "recency_days",  # days since the last event of any kind
    "purchase_recency_days",  # days since the last purchase (tenure when none)
    "tenure_days",  # days since first seen
    "orders",  # number of orders (frequency)
    "monetary",  # spend in the user's main currency
    "avg_order_value",  # that spend / the orders paid in it
    "orders_per_month",  # orders / max(tenure in months, 1)
    "sessions",
    "events",  # all events
    "product_views",
    "cart_adds",
    "cart_abandonment",  # share of started carts that did not convert (0 without carts)
    "distinct_items_bought",
    "social_signals",
    "days_between_orders",  # mean days between orders (the days observed when fewer than two)
    "purchase_overdue",  # purchase_recency_days / days_between_orders: 1 = one usual gap late
)

_SOCIAL = ("like", "share", "comment", "follow", "mention")


def features(profile: Profile, now_ms: int) -> list[float]:
    """The feature vector of `profile` as of `now_ms`, in `FEATURE_NAMES` order."""
    now_ms = max(now_ms, profile.last_seen)

    def days(ms: int) -> float:
        return max(0.0, (now_ms - ms) / DAY_MS)

    tenure = days(profile.first_seen) if profile.first_seen else 0.0
    orders = float(profile.orders)
    started = profile.carts_started
    abandonment = 0.0
    if started:
        abandonment = max(0.0, 1.0 - profile.carts_converted / started)
    counts = profile.counts
    since_purchase = days(profile.last_purchase) if profile.last_purchase else tenure
    gap = _days_between_orders(profile, tenure)
    spent, paid_orders = profile.spend.get(profile.main_currency, (0.0, 0))
    return [
        days(profile.last_seen) if profile.last_seen else 0.0,
        since_purchase,
        tenure,
        orders,
        spent,
        spent / paid_orders if paid_orders else 0.0,
        orders / max(tenure / 30.0, 1.0),
        float(profile.sessions),
        float(sum(counts.values())),
        float(counts.get("product_view", 0)),
        float(counts.get("add_to_cart", 0)),
        abandonment,
        float(len(profile.purchased)),
        float(sum(counts.get(t, 0) for t in _SOCIAL)),
        gap,
        since_purchase / max(gap, 1.0),
    ]


def _days_between_orders(profile: Profile, tenure: float) -> float:
    """The mean gap between orders: (last purchase - first seen) / (orders - 1). The profile keeps
    no first purchase time, so first_seen stands in for it (the same on purchase-only data, an
    over-estimate when the user browsed before buying). Fewer than two orders: the days observed
    without a repeat (tenure), the shortest gap consistent with what was seen."""
    if profile.orders < 2 or not profile.last_purchase:
        return tenure
    return max(0.0, (profile.last_purchase - profile.first_seen) / DAY_MS) / (profile.orders - 1)


def log_scale(values: list[float]) -> list[float]:
    """sign(x) * log1p(|x|): tames the heavy tails of counts and money for linear models."""
    return [math.copysign(math.log1p(abs(v)), v) for v in values]
