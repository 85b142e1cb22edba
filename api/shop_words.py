"""The "why" in shop language, for the preview page (issue 18 item 7): what a marketer reads
beside a customer's e-mail. No model terms (no log-odds, no similarity scores, no ids where a
product title exists), money with its currency in the customer's locale (engine/locales.py),
orders rather than purchase lines. Pure: built from the profile and `api.explain.explain`'s
technical explanation, which `GET /v1/users/{id}/explain` keeps for data scientists. A title
with direction controls comes isolated (engine.text.isolated): it cannot reorder the sentence or
the price written after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.blocks import item_view
from engine.catalog import Product
from engine.locales import currency_of, format_price
from engine.profile import Profile
from engine.text import isolated

Lookup = Callable[[str], Product | None]
DAY_MS = 86_400_000

# Why a block is the fallback (engine.blocks.REASONS), as the preview's badge says it.
REASON_TEXT = {
    "unknown_user": "unknown customer: no events were seen for this id, so the block shows the "
    "best-sellers",
    "no_consent": "no consent to personalization: the block shows the best-sellers",
    "empty_cart": "the cart is empty: the block shows the best-sellers instead of a cart reminder",
    "low_churn_risk": "the customer is not at risk of leaving: no win-back offer, the block shows "
    "the best-sellers",
    "nothing_personal": "nothing personal to show yet: the block shows the best-sellers",
    "template_error": "the block's template failed: the block shows the best-sellers",
    "nothing_similar": "no similar product is available: the block shows the best-sellers",
    "holdout": "in a content test's holdout group: the block shows the best-sellers, to measure "
    "what personal blocks add",
    "deadline": "the batch's time limit passed before this customer's block was made: the block "
    "shows the best-sellers",
    "error": "reading this customer's data or a model failed (see the logs): the block shows the "
    "best-sellers",
}

# The churn model's features (engine.features.FEATURE_NAMES) as sentences: (value, money) -> text.
FEATURE_TEXT: dict[str, Callable[[float, Callable[[float], str]], str]] = {
    "recency_days": lambda v, m: "seen today" if v < 1 else f"last seen {v:.0f} days ago",
    "purchase_recency_days": lambda v, m: f"last order {v:.0f} days ago",
    "tenure_days": lambda v, m: "a new customer" if v < 1 else f"a customer for {v:.0f} days",
    "orders": lambda v, m: "no order yet" if not v else f"{v:.0f} orders",
    "monetary": lambda v, m: f"{m(v)} spent",
    "avg_order_value": lambda v, m: f"{m(v)} an order on average",
    "orders_per_month": lambda v, m: f"{v:.1f} orders a month",
    "sessions": lambda v, m: f"{v:.0f} visits",
    "events": lambda v, m: f"{v:.0f} interactions with the shop",
    "product_views": lambda v, m: f"{v:.0f} product views",
    "cart_adds": lambda v, m: f"{v:.0f} products added to the cart",
    "cart_abandonment": lambda v, m: f"{v * 100:.0f}% of carts left without an order",
    "distinct_items_bought": lambda v, m: f"{v:.0f} different products bought",
    "social_signals": lambda v, m: f"{v:.0f} likes, shares and comments",
    "days_between_orders": lambda v, m: f"an order every {v:.0f} days on average",
    "purchase_overdue": lambda v, m: f"{v:.1f} times the usual time between orders since the last",
}
# Features that say something about orders only once there is one (before: "no order yet").
ORDER_FEATURES = frozenset(
    {
        "purchase_recency_days",
        "monetary",
        "avg_order_value",
        "orders_per_month",
        "distinct_items_bought",
        "days_between_orders",
        "purchase_overdue",
    }
)


def money(amount: float, currency: str, locale: str) -> str:
    """`amount` in `currency` for the customer's locale; a bare amount when no currency is known."""
    return format_price(amount, currency, locale) if currency else f"{amount:,.2f}"


def shop_why(profile: Profile, why: dict[str, Any], lookup: Lookup, now_ms: int) -> dict[str, Any]:
    """The preview's "why" of one customer (`why`: api.explain.explain's answer)."""
    locale = profile.locale
    return {
        "customer": customer(profile, lookup, now_ms),
        "risk": risk(why["churn"], profile),
        "recommendations": [
            _recommendation(r, profile, lookup, now_ms) for r in why["recommendations"]
        ],
        "recent": [
            {"title": _title(lookup, i["item_id"]), "when": _ago(now_ms, i["ts"])}
            for i in why["recent_items"]
        ],
        "blocks": {
            name: {
                "fallback": b["fallback"],
                "reason_text": REASON_TEXT.get(b["reason"], ""),
                "variant": b["variant"],
                "rules": b["rules"],  # the merchandising rules that changed it, by their ids
            }
            for name, b in why["blocks"].items()
        },
        "locale": locale,
    }


def customer(profile: Profile, lookup: Lookup, now_ms: int) -> dict[str, Any]:
    """Orders, money spent per currency, the cart with titles and prices, visits."""
    spent = [
        money(amount, currency, profile.locale)
        for currency, (amount, _orders) in sorted(profile.spend.items(), key=lambda kv: -kv[1][1])
        if amount
    ]
    return {
        "orders": profile.orders,
        "spent": spent,
        "cart": [_cart_line(item, n, profile, lookup, now_ms) for item, n in profile.cart.items()],
        "visits": profile.sessions,
        "last_seen": _ago(now_ms, profile.last_seen),
        "customer_since": _ago(now_ms, profile.first_seen),
    }


def risk(churn: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """The churn score as a share and a word, and what raises or lowers it (no model terms)."""
    score = float(churn["score"])
    threshold = float(churn["threshold"])
    level = "high" if score >= threshold else "medium" if score >= threshold / 2 else "low"
    currency = profile.main_currency

    def fmt(v: float) -> str:
        return money(v, currency, profile.locale)

    drivers: dict[str, str] = {}  # text -> effect, the strongest first, each text once
    for f in churn["top_features"]:
        if f["feature"] in FEATURE_TEXT and f["weight"]:
            text = _driver_text(f["feature"], float(f["value"]), fmt, profile.orders)
            drivers.setdefault(text, "raises the risk" if f["weight"] > 0 else "lowers the risk")
    return {
        "percent": round(score * 100),
        "level": level,
        "winback": bool(churn["winback"]),
        "threshold_percent": round(threshold * 100),
        "drivers": [{"text": text, "effect": effect} for text, effect in drivers.items()],
    }


def _driver_text(feature: str, value: float, fmt: Callable[[float], str], orders: int) -> str:
    if not orders and feature in ORDER_FEATURES:
        return "no order yet"
    return FEATURE_TEXT[feature](value, fmt)


def _recommendation(
    rec: dict[str, Any], profile: Profile, lookup: Lookup, now_ms: int
) -> dict[str, Any]:
    product = lookup(rec["item_id"])
    because = [
        f"{_title(lookup, b['item_id'])} ({_did(profile, b['item_id'])})" for b in rec["because"]
    ]
    return {
        "item_id": rec["item_id"],
        "title": isolated(product.title) if product else "a product no longer in the catalog",
        "price": _price(product, profile.locale, now_ms),
        "because": (
            "shoppers who were interested in " + " and ".join(because) + " also chose it"
            if because
            else "a best-seller right now (nothing they looked at points to a closer match)"
        ),
    }


def _cart_line(
    item: str, quantity: int, profile: Profile, lookup: Lookup, now_ms: int
) -> dict[str, Any]:
    product = lookup(item)
    return {
        "title": isolated(product.title) if product else "a product no longer in the catalog",
        "quantity": quantity,
        "price": _price(product, profile.locale, now_ms),
    }


def _price(product: Product | None, locale: str, now_ms: int) -> str | None:
    if product is None:
        return None
    return str(item_view(product, now_ms, locale, currency_of(locale))["price_text"])


def _did(profile: Profile, item: str) -> str:
    if any(i == item for i, _ in profile.purchased):
        return "bought"
    return "in the cart" if item in profile.cart else "viewed"


def _title(lookup: Lookup, item: str) -> str:
    product = lookup(item)
    return isolated(product.title) if product else "a product no longer in the catalog"


def _ago(now_ms: int, ts: int) -> str:
    if not ts:
        return "never"
    days = max(0, now_ms - ts) // DAY_MS
    return "today" if days == 0 else "yesterday" if days == 1 else f"{days} days ago"
