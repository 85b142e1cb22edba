"""Triggers for automation scenarios, as pure decisions over profiles and products.

Each check returns the trigger to emit (or None) and the profile with the firing recorded, so the
adapter writes both together. Every trigger has a deterministic `trigger_id`: a consumer that sees
one twice (at-least-once delivery after a crash) can drop the repeat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from engine.catalog import InvalidProduct, Product, validate_product
from engine.consent import PURPOSES
from engine.events import Event
from engine.profile import Profile

ABANDONED_CART = "abandoned_cart"
CHURN_RISK = "churn_risk"
BACK_IN_STOCK = "back_in_stock"
PRICE_DROP = "price_drop"
ITEM_KINDS = (BACK_IN_STOCK, PRICE_DROP)  # the kinds of trigger a catalog change causes
CONSENT_WITHDRAWN = "consent_withdrawn"  # a notice: automations cancel the user's queued sends
USER_ERASED = "user_erased"  # a webhook notice: receivers delete what they hold about the user


@dataclass(frozen=True)
class Trigger:
    trigger: str
    user_id: str
    ts: int  # event time at which it fired
    trigger_id: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_message(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "user_id": self.user_id,
            "ts": self.ts,
            "trigger_id": self.trigger_id,
            **self.details,
        }


def consent_withdrawn(profile: Profile, event: Event) -> Trigger | None:
    """The notice of a `consent` event that withdrew purposes: those it says false that the
    folded profile now holds false (a withdrawal older than a grant it lost to withdrew nothing).
    It needs no consent itself: it is how the withdrawal reaches the automations."""
    if event.type != "consent":
        return None
    props = event.props or {}
    purposes = [p for p in PURPOSES if props.get(p) is False and not profile.consents_to(p, True)]
    if not purposes:
        return None
    trigger_id = f"{CONSENT_WITHDRAWN}:{profile.user_id}:{event.event_id}"
    return Trigger(CONSENT_WITHDRAWN, profile.user_id, event.ts, trigger_id, {"purposes": purposes})


def user_erased(user_id: str, erased_ms: int) -> Trigger:
    """The webhook notice of an erasure (`DELETE /v1/users/{id}`, or a merged id erased with its
    user): webhook receivers got the user's triggers and must delete their copies. `ts` is the
    erasure's time (the erase command's record time, the user's fence); a repeat of the same
    erasure (a redelivered command) has the same `trigger_id`. Only to the webhooks: consumers
    of the `triggers` topic have the erasure's tombstone, and a record after it would be one
    more record keyed by the erased user."""
    return Trigger(USER_ERASED, user_id, erased_ms, f"{USER_ERASED}:{user_id}:{erased_ms}")


def abandoned_cart_due(profile: Profile, delay_ms: int) -> int | None:
    """When this profile's cart will count as abandoned (None: nothing pending)."""
    if not profile.cart or profile.last_checkout >= profile.cart_changed:
        return None
    if profile.fired.get(ABANDONED_CART) == profile.cart_changed:
        return None  # already fired for this state of the cart
    return profile.cart_changed + delay_ms


def abandoned_cart(profile: Profile, now_ms: int, delay_ms: int) -> tuple[Trigger | None, Profile]:
    """Fire once per state of the cart: items in it, no checkout or purchase since it last
    changed, and `delay_ms` of event time passed. A later purchase or checkout cancels it."""
    due = abandoned_cart_due(profile, delay_ms)
    if due is None or now_ms < due:
        return None, profile
    fired = profile.marked(ABANDONED_CART, profile.cart_changed)
    trigger = Trigger(
        ABANDONED_CART,
        profile.user_id,
        now_ms,
        f"{ABANDONED_CART}:{profile.user_id}:{profile.cart_changed}",
        {"cart": dict(profile.cart), "cart_changed": profile.cart_changed},
    )
    return trigger, fired


def churn_risk(
    profile: Profile, score: float, threshold: float, now_ms: int
) -> tuple[Trigger | None, Profile]:
    """Fire when the churn score crosses `threshold` upward; re-arm once it falls below. The
    first score of a profile only sets the baseline: a newcomer who starts above the threshold
    has crossed nothing."""
    if CHURN_RISK not in profile.fired:
        return None, profile.marked(CHURN_RISK, now_ms if score >= threshold else 0)
    high = profile.fired.get(CHURN_RISK, 0) > 0
    if score >= threshold and not high:
        updated = profile.marked(CHURN_RISK, now_ms)
        trigger = Trigger(
            CHURN_RISK,
            profile.user_id,
            now_ms,
            f"{CHURN_RISK}:{profile.user_id}:{now_ms}",
            {"score": round(score, 6), "threshold": threshold},
        )
        return trigger, updated
    if score < threshold and high:
        return None, profile.marked(CHURN_RISK, 0)
    return None, profile


def cause_ms(trigger: Trigger, profile: Profile) -> int:
    """The event time of what a trigger is about: the cart's last change for `abandoned_cart`,
    the user's cart change or view of the item for `back_in_stock` / `price_drop`, the firing
    itself for the others (`churn_risk`: the event time at which the score crossed)."""
    if trigger.trigger == ABANDONED_CART:
        return int(trigger.details.get("cart_changed", trigger.ts))
    if trigger.trigger in ITEM_KINDS:
        if trigger.details.get("where") == "cart":
            return profile.cart_changed
        item = trigger.details.get("item_id")
        return max((ts for seen, ts in profile.recent if seen == item), default=trigger.ts)
    return trigger.ts


def stale(trigger: Trigger, profile: Profile, wall_ms: int, max_age_ms: int) -> bool:
    """Whether a trigger is about something more than `max_age_ms` older than the wall clock
    (`PERSONA_TRIGGER_MAX_AGE_HOURS`; 0: no bound). Event time decides when a trigger is due, so
    a replay of last year's events (into an empty engine, or one whose clock is current) makes
    year-old carts due: the firing is recorded, as usual, so it never fires later, but not sent:
    nobody is e-mailed about a cart they left a year ago."""
    return max_age_ms > 0 and wall_ms - cause_ms(trigger, profile) > max_age_ms


def catalog_change(old: Product | None, new: Product | None) -> list[str]:
    """The trigger kinds a catalog update causes: back in stock and/or a lower price."""
    if old is None or new is None:
        return []
    kinds = []
    if old.availability == "out_of_stock" and new.purchasable:
        kinds.append(BACK_IN_STOCK)
    if new.price < old.price and new.currency == old.currency:
        kinds.append(PRICE_DROP)
    return kinds


def item_change(command: dict[str, Any]) -> tuple[Product, list[str], float]:
    """The product, trigger kinds and old price of an `item_changed` command; InvalidProduct
    (a ValueError) when it is not one the catalog fold could have sent (the commands topic is
    open to any producer: a product id that is not a string once stopped the worker)."""
    product = validate_product(command.get("product"))
    kinds = command.get("kinds")
    if not isinstance(kinds, list) or not kinds or any(k not in ITEM_KINDS for k in kinds):
        raise InvalidProduct(f"kinds must be a list of {', '.join(ITEM_KINDS)}")
    old_price = command.get("old_price")
    try:
        if isinstance(old_price, bool) or not isinstance(old_price, int | float):
            raise TypeError(old_price)
        price = float(old_price)  # OverflowError: an integer beyond any float
    except (TypeError, OverflowError):
        raise InvalidProduct("old_price must be a number") from None
    if not math.isfinite(price):
        raise InvalidProduct("old_price must be finite")
    return product, [str(k) for k in kinds], price


def item_marker(kind: str, item_id: str) -> str:
    """The key in `Profile.fired` of the newest item change of `kind` that fired for the item."""
    return f"{kind}:{item_id}"


def _marked_item(key: str) -> str | None:
    """The item of an item-change marker (None: a key of another trigger)."""
    for kind in ITEM_KINDS:
        if key.startswith(kind + ":"):
            return key[len(kind) + 1 :]
    return None


def item_triggers(
    profile: Profile,
    product: Product,
    kinds: list[str],
    old_price: float,
    now_ms: int,
    changed_ms: int,
) -> tuple[list[Trigger], Profile]:
    """Triggers for one user whose cart or recent views hold a changed product, and the profile
    with the firings recorded.

    `changed_ms` identifies the change (the signing time of its `item_changed` command): each
    kind fires once per change and item, and a change at or before the one recorded for the
    kind and item (the same command redelivered, or a signed copy produced again) fires nothing.
    Recording a firing drops the markers of items the user no longer holds in the cart or the
    recent views, so `fired` stays bounded by those."""
    where = (
        "cart"
        if product.item_id in profile.cart
        else "recent_views"
        if product.item_id in profile.recent_items
        else None
    )
    if where is None:
        return [], profile
    out = []
    updated = profile
    for kind in kinds:
        key = item_marker(kind, product.item_id)
        if key in updated.fired and changed_ms <= updated.fired[key]:
            continue  # this change (or a newer one) already fired for the user
        updated = updated.marked(key, changed_ms)
        marker = product.price if kind == PRICE_DROP else changed_ms
        details: dict[str, Any] = {"item_id": product.item_id, "where": where}
        if kind == PRICE_DROP:
            details.update(old_price=old_price, price=product.price, currency=product.currency)
        out.append(
            Trigger(
                kind,
                profile.user_id,
                now_ms,
                f"{kind}:{profile.user_id}:{product.item_id}:{marker}",
                details,
            )
        )
    if updated is not profile:  # its `fired` is its own dict (Profile.marked)
        held = set(profile.cart) | set(profile.recent_items)
        for key in list(updated.fired):
            item = _marked_item(key)
            if item is not None and item not in held:
                del updated.fired[key]
    return out, updated
