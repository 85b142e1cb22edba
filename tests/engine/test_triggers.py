import pytest

from engine.catalog import InvalidProduct, Product
from engine.events import validate
from engine.profile import RECENT_ITEMS, apply, fold
from engine.triggers import (
    BACK_IN_STOCK,
    PRICE_DROP,
    abandoned_cart,
    abandoned_cart_due,
    catalog_change,
    churn_risk,
    consent_withdrawn,
    item_change,
    item_triggers,
)

T0 = 1_700_000_000_000
HOUR = 3_600_000
_n = [0]


def ev(type_, item=None, ts=T0, **kw):
    _n[0] += 1
    data = {"event_id": f"t{_n[0]}", "type": type_, "user_id": "u", "ts": ts, **kw}
    if item:
        data["item_id"] = item
    return validate(data)


def product(price=10.0, availability="in_stock", item="a"):
    return Product(
        item,
        "A",
        "https://s.example.com/a",
        "https://s.example.com/a.jpg",
        price,
        "EUR",
        availability,
    )


def test_abandoned_cart_fires_once_after_the_delay():
    p = fold([ev("add_to_cart", "a", T0), ev("add_to_cart", "b", T0 + 10)])
    assert p is not None
    assert abandoned_cart_due(p, HOUR) == T0 + 10 + HOUR
    trigger, same = abandoned_cart(p, T0 + HOUR, HOUR)
    assert trigger is None and same is p  # not yet
    trigger, fired = abandoned_cart(p, T0 + 10 + HOUR, HOUR)
    assert trigger is not None and trigger.details["cart"] == {"a": 1, "b": 1}
    assert trigger.trigger_id == f"abandoned_cart:u:{T0 + 10}"
    again, _ = abandoned_cart(fired, T0 + 5 * HOUR, HOUR)
    assert again is None  # fired once for this cart
    changed = apply(fired, ev("add_to_cart", "c", T0 + 6 * HOUR))
    assert abandoned_cart(changed, T0 + 8 * HOUR, HOUR)[0] is not None  # a new cart state


def test_purchase_or_checkout_cancels_it():
    p = fold(
        [ev("add_to_cart", "a", T0), ev("add_to_cart", "b", T0 + 1), ev("checkout", None, T0 + 2)]
    )
    assert p is not None and abandoned_cart_due(p, HOUR) is None
    p = fold(
        [
            ev("add_to_cart", "a", T0),
            ev("add_to_cart", "b", T0 + 1),
            ev("purchase", "a", T0 + 5, price=1.0),
        ]
    )
    assert p is not None and p.cart == {"b": 1}
    assert abandoned_cart(p, T0 + 10 * HOUR, HOUR)[0] is None
    assert abandoned_cart_due(fold([ev("page_view")]), HOUR) is None  # empty cart


def test_churn_risk_fires_on_upward_crossing_and_rearms():
    p = fold([ev("page_view")])
    assert p is not None
    trigger, p = churn_risk(p, 0.4, 0.5, T0)  # the first score sets the baseline
    assert trigger is None
    trigger, high = churn_risk(p, 0.4, 0.5, T0)
    assert trigger is None and high is p
    trigger, high = churn_risk(p, 0.7, 0.5, T0 + 1)
    assert trigger is not None and trigger.details["score"] == 0.7
    assert churn_risk(high, 0.9, 0.5, T0 + 2)[0] is None  # still high: no repeat
    _, low = churn_risk(high, 0.2, 0.5, T0 + 3)
    assert churn_risk(low, 0.6, 0.5, T0 + 4)[0] is not None  # crossed again


def test_catalog_change_kinds():
    assert catalog_change(product(availability="out_of_stock"), product()) == [BACK_IN_STOCK]
    assert catalog_change(product(10.0), product(8.0)) == [PRICE_DROP]
    assert catalog_change(product(10.0), product(12.0)) == []
    assert catalog_change(None, product()) == []
    both = catalog_change(product(10.0, "out_of_stock"), product(9.0, "preorder"))
    assert both == [BACK_IN_STOCK, PRICE_DROP]


def test_item_triggers_for_cart_and_recent_views_only():
    p = fold([ev("add_to_cart", "a", T0), ev("product_view", "v", T0 + 1)])
    assert p is not None
    [t], _ = item_triggers(p, product(8.0, item="a"), [PRICE_DROP], 10.0, T0 + 2, T0 + 1)
    assert t.details == {
        "item_id": "a",
        "where": "cart",
        "old_price": 10.0,
        "price": 8.0,
        "currency": "EUR",
    }
    [t], _ = item_triggers(p, product(item="v"), [BACK_IN_STOCK], 10.0, T0 + 2, T0 + 1)
    assert t.details["where"] == "recent_views"
    assert item_triggers(p, product(item="zzz"), [PRICE_DROP], 10.0, T0, T0) == ([], p)


def test_an_item_change_fires_once_per_change_whatever_its_replays():
    """A signed `item_changed` command produced again (a copy, or the same record redelivered)
    fired its price drop and back-in-stock again: nothing recorded the firing, and the
    back-in-stock id took the clock's time, so even a consumer's de-duplication missed it."""
    p = fold([ev("add_to_cart", "a", T0), ev("product_view", "v", T0 + 1)])
    assert p is not None
    kinds = [BACK_IN_STOCK, PRICE_DROP]
    fired, p1 = item_triggers(p, product(8.0, item="a"), kinds, 10.0, T0 + 5, T0 + 2)
    assert [t.trigger_id for t in fired] == [f"back_in_stock:u:a:{T0 + 2}", "price_drop:u:a:8.0"]
    for later in (T0 + 5, T0 + HOUR):  # the same change (signed at T0 + 2) or an older one
        for signed in (T0 + 2, T0 + 1):
            assert item_triggers(p1, product(8.0, item="a"), kinds, 10.0, later, signed) == ([], p1)
    fired, p2 = item_triggers(p1, product(6.0, item="a"), [PRICE_DROP], 8.0, T0 + HOUR, T0 + 9)
    assert [t.trigger_id for t in fired] == ["price_drop:u:a:6.0"]  # a new change fires
    assert p2.fired["price_drop:a"] == T0 + 9 and p2.fired["back_in_stock:a"] == T0 + 2


def test_item_change_markers_are_kept_only_for_items_the_user_holds():
    p = fold([ev("add_to_cart", "a", T0), ev("add_to_cart", "b", T0 + 1)])
    assert p is not None
    _, p = item_triggers(p, product(8.0, item="a"), [PRICE_DROP], 10.0, T0 + 2, T0 + 2)
    _, p = item_triggers(p, product(8.0, item="b"), [PRICE_DROP], 10.0, T0 + 2, T0 + 2)
    p = apply(p, ev("remove_from_cart", "a", T0 + 3))
    for n in range(RECENT_ITEMS):  # "a" leaves the recent items too
        p = apply(p, ev("product_view", f"x{n}", T0 + 4 + n))
    assert "a" not in p.recent_items and "b" in p.cart
    _, p = item_triggers(p, product(7.0, item="b"), [PRICE_DROP], 8.0, T0 + 99, T0 + 99)
    assert {k for k in p.fired if ":" in k} == {"price_drop:b"}


def test_a_newcomer_above_the_threshold_has_crossed_nothing():
    p = fold([ev("page_view")])
    assert p is not None
    trigger, p = churn_risk(p, 0.9, 0.5, T0)
    assert trigger is None
    assert churn_risk(p, 0.95, 0.5, T0 + 1)[0] is None
    _, p = churn_risk(p, 0.1, 0.5, T0 + 2)
    assert churn_risk(p, 0.8, 0.5, T0 + 3)[0] is not None


def test_item_change_reads_what_the_catalog_agent_sends():
    command = {"command": "item_changed", "product": product(8.0).to_dict()}
    command.update(kinds=[PRICE_DROP, BACK_IN_STOCK], old_price=10)
    assert item_change(command) == (product(8.0), [PRICE_DROP, BACK_IN_STOCK], 10.0)


@pytest.mark.parametrize(
    "change",
    [
        {"product": None},
        {"product": [1]},
        {"product": {**product().to_dict(), "item_id": {"a": 1}}},  # once stopped the worker
        {"product": {**product().to_dict(), "item_id": [1]}},
        {"product": {**product().to_dict(), "price": "cheap"}},
        {"kinds": None},
        {"kinds": []},
        {"kinds": ["teleport"]},
        {"kinds": [[PRICE_DROP]]},
        {"old_price": None},
        {"old_price": "10"},
        {"old_price": True},
        {"old_price": float("nan")},
        {"old_price": 10**400},
    ],
)
def test_a_malformed_item_change_is_refused_with_a_reason(change):
    command = {"product": product().to_dict(), "kinds": [PRICE_DROP], "old_price": 12.0}
    with pytest.raises(InvalidProduct) as refused:
        item_change({**command, **change})
    assert refused.value.reason


def test_a_withdrawal_is_announced_with_the_purposes_it_withdrew():
    granted = apply(None, ev("consent", props={"personalization": True, "email": True}))
    withdraw = ev("consent", ts=T0 + HOUR, props={"email": False, "ads": True})
    notice = consent_withdrawn(apply(granted, withdraw), withdraw)
    assert notice is not None
    assert notice.to_message() == {
        "trigger": "consent_withdrawn",
        "user_id": "u",
        "ts": T0 + HOUR,
        "trigger_id": f"consent_withdrawn:u:{withdraw.event_id}",
        "purposes": ["email"],
    }


def test_no_notice_for_a_grant_or_for_a_withdrawal_a_newer_grant_outranks():
    granted = ev("consent", ts=T0 + HOUR, props={"personalization": True})
    profile = apply(None, granted)
    assert consent_withdrawn(profile, granted) is None
    late = ev("consent", ts=T0, props={"personalization": False})  # older than the grant
    assert consent_withdrawn(apply(profile, late), late) is None
    assert consent_withdrawn(profile, ev("page_view")) is None
