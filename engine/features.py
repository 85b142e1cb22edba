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

SOCIAL = ("like", "share", "comment", "follow", "mention")  # the social_signals counted


def features(profile: Profile, now_ms: int) -> list[float]:
    """The feature vector of `profile` as of `now_ms`, in `FEATURE_NAMES` order.

    Every batch scores each user it touched, so this is written out flat: `max(0.0, x)` as
    `x if x > 0.0 else 0.0` (what `max` returns, nan and -0.0 included), no helper calls, the
    main currency looked up only when there are several. The numbers are those of the plain
    formulas in the comments, bit for bit (tests/engine/test_features.py compares them)."""
    last_seen = profile.last_seen
    if last_seen > now_ms:  # now = max(now_ms, last_seen)
        now_ms = last_seen
    first_seen = profile.first_seen
    tenure = 0.0  # days(first_seen) if first_seen, days(ms) = max(0.0, (now - ms) / DAY_MS)
    if first_seen:
        tenure = (now_ms - first_seen) / DAY_MS
        if not tenure > 0.0:
            tenure = 0.0
    recency = 0.0  # days(last_seen) if last_seen
    if last_seen:
        recency = (now_ms - last_seen) / DAY_MS
        if not recency > 0.0:
            recency = 0.0
    last_purchase = profile.last_purchase
    since_purchase = tenure  # days(last_purchase) if last_purchase, else tenure
    if last_purchase:
        since_purchase = (now_ms - last_purchase) / DAY_MS
        if not since_purchase > 0.0:
            since_purchase = 0.0
    orders = float(profile.orders)
    started = profile.carts_started
    abandonment = 0.0  # max(0.0, 1 - converted / started) with carts started
    if started:
        abandonment = 1.0 - profile.carts_converted / started
        if not abandonment > 0.0:
            abandonment = 0.0
    # The mean gap between orders: (last purchase - first seen) / (orders - 1). The profile keeps
    # no first purchase time, so first_seen stands in for it (the same on purchase-only data, an
    # over-estimate when the user browsed before buying). Fewer than two orders: the days observed
    # without a repeat (tenure), the shortest gap consistent with what was seen.
    gap = tenure
    if profile.orders >= 2 and last_purchase:
        gap = (last_purchase - first_seen) / DAY_MS  # max(0.0, ...) / (orders - 1)
        if not gap > 0.0:
            gap = 0.0
        gap = gap / (profile.orders - 1)
    spend = profile.spend  # spend.get(main_currency, (0.0, 0))
    if len(spend) > 1:
        spent, paid_orders = spend[profile.main_currency]
    else:
        spent, paid_orders = next(iter(spend.values())) if spend else (0.0, 0)
    counts = profile.counts
    count = counts.get
    months = tenure / 30.0
    return [
        recency,
        since_purchase,
        tenure,
        orders,
        spent,
        spent / paid_orders if paid_orders else 0.0,
        orders / (1.0 if months < 1.0 else months),  # orders / max(months, 1.0)
        float(profile.sessions),
        float(sum(counts.values())),
        float(count("product_view", 0)),
        float(count("add_to_cart", 0)),
        abandonment,
        float(len(profile.purchased)),
        # sum(count(t, 0) for t in SOCIAL), in that order
        float(
            0
            + count("like", 0)
            + count("share", 0)
            + count("comment", 0)
            + count("follow", 0)
            + count("mention", 0)
        ),
        gap,
        since_purchase / (1.0 if gap < 1.0 else gap),  # since_purchase / max(gap, 1.0)
    ]


def log_scale(values: list[float]) -> list[float]:
    """sign(x) * log1p(|x|): tames the heavy tails of counts and money for linear models."""
    return [math.copysign(math.log1p(abs(v)), v) for v in values]
