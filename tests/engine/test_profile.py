from engine.catalog import Product
from engine.dedup import BLOCK, SeenIds
from engine.events import validate
from engine.profile import (
    DEDUP_IDS,
    RECENT_ITEMS,
    SESSION_GAP_MS,
    Profile,
    apply,
    fold,
)

T0 = 1_700_000_000_000
_n = 0


def ev(type_="product_view", item="i1", ts=T0, user="u1", **kw):
    global _n
    _n += 1
    data = {"event_id": kw.pop("event_id", f"e{_n}"), "type": type_, "user_id": user, "ts": ts}
    if item is not None:
        data["item_id"] = item
    data.update(kw)
    return validate(data)


def product(item="i1", category="Lighting", brand="Acme", price=2.5):
    return Product(
        item,
        "T",
        "https://x.example/p",
        "https://x.example/i.jpg",
        price,
        "GBP",
        "in_stock",
        category,
        brand,
    )


def test_counts_recent_items_and_last_seen():
    p = fold([ev(item="a", ts=T0), ev(item="b", ts=T0 + 1000), ev("page_view", None, T0 + 2000)])
    assert p is not None
    assert p.counts == {"product_view": 2, "page_view": 1}
    assert p.recent_items == ["b", "a"]
    assert (p.first_seen, p.last_seen) == (T0, T0 + 2000)


def test_out_of_order_events_land_by_event_time():
    p = fold([ev(item="new", ts=T0 + 5000), ev(item="old", ts=T0)])
    assert p is not None
    assert p.recent_items == ["new", "old"]
    assert p.last_seen == T0 + 5000 and p.first_seen == T0


def test_recent_items_are_distinct_and_bounded():
    events = [ev(item=f"i{i}", ts=T0 + i) for i in range(RECENT_ITEMS + 10)]
    events.append(ev(item="i0", ts=T0 + 10_000))
    p = fold(events)
    assert p is not None
    assert len(p.recent) == RECENT_ITEMS
    assert p.recent_items[0] == "i0"
    assert len(set(p.recent_items)) == RECENT_ITEMS


def test_cart_add_remove_and_purchase():
    p = fold(
        [
            ev("add_to_cart", "a", T0, quantity=2),
            ev("add_to_cart", "b", T0 + 1),
            ev("remove_from_cart", "a", T0 + 2),
        ]
    )
    assert p is not None and p.cart == {"a": 1, "b": 1}
    p = apply(p, ev("purchase", "b", T0 + 3, price=10.0, session_id="o1"))
    assert p.cart == {"a": 1}
    assert p.orders == 1 and p.monetary == 10.0 and p.last_purchase == T0 + 3
    assert p.purchased[0][0] == "b"
    assert p.carts_started == 1 and p.carts_converted == 1


def test_order_lines_of_one_order_count_as_one_order():
    p = fold(
        [
            ev("purchase", "a", T0, price=1.0, quantity=3, props={"order_id": "A1"}),
            ev("purchase", "b", T0, price=2.0, props={"order_id": "A1"}),
            ev("purchase", "c", T0 + 86_400_000, price=5.0, props={"order_id": "A2"}),
        ]
    )
    assert p is not None and p.orders == 2 and p.monetary == 10.0


def test_purchase_price_falls_back_to_catalog():
    p = apply(None, ev("purchase", "a", T0, quantity=2), product("a", price=4.0))
    assert p.monetary == 8.0


def test_affinities_from_catalog_and_props():
    p = apply(None, ev("product_view", "a", T0), product("a", category="Lighting", brand="Acme"))
    p = apply(p, ev("add_to_cart", "a", T0 + 1), product("a", category="Lighting", brand="Acme"))
    p = apply(p, ev("like", "z", T0 + 2, props={"category": "Garden"}))
    assert p.categories == {"Lighting": 4.0, "Garden": 2.0}
    assert p.brands == {"Acme": 4.0}


def test_sessions_by_thirty_minute_gap_in_event_time():
    gap = SESSION_GAP_MS
    p = fold([ev(ts=T0), ev(ts=T0 + gap - 1), ev(ts=T0 + 2 * gap + 10)])
    assert p is not None and p.sessions == 2


def test_out_of_order_event_bridges_two_sessions_into_one():
    gap = SESSION_GAP_MS
    p = fold([ev(ts=T0), ev(ts=T0 + 50 * 60_000)])
    assert p is not None and p.sessions == 2
    p = apply(p, ev(ts=T0 + 25 * 60_000))  # late, lands between: one session now
    assert p.sessions == 1 and p.spans == [[T0, T0 + 50 * 60_000]]
    p = apply(p, ev(ts=T0 - 3 * gap))  # much earlier: a session of its own
    assert p.sessions == 2


def test_session_count_is_independent_of_arrival_order():
    times = [T0 + m * 60_000 for m in (0, 10, 45, 80, 200, 215, 400, 1000, 1029)]
    in_order = fold([ev(ts=t) for t in times])
    shuffled = fold([ev(ts=t) for t in reversed(times)])
    assert in_order is not None and shuffled is not None
    assert in_order.sessions == shuffled.sessions == 6  # gaps > 30 min: 35, 35, 120, 185, 600


def sessions_of(times: list[int]) -> list[list[int]]:
    """Reference: sort the times and split wherever two neighbours lie more than a gap apart."""
    spans: list[list[int]] = []
    for t in sorted(times):
        if spans and t - spans[-1][1] <= SESSION_GAP_MS:
            spans[-1][1] = t
        else:
            spans.append([t, t])
    return spans


def test_sessions_match_the_sorted_reference_in_any_arrival_order():
    import random

    rng = random.Random(7)
    for _ in range(300):
        # clustered times (in-session events, near-gap neighbours, far ones), in a mostly
        # ordered arrival with some late events: the fast path and the merge path both run
        times = [T0 + rng.choice((1, 20, 29, 31, 45, 240)) * 60_000 * i for i in range(25)]
        times = [t + rng.randrange(-40, 40) * 60_000 for t in times]
        arrival = sorted(times, key=lambda t: t + rng.choice((0, 0, 0, -1, 1)) * 90 * 60_000)
        p = fold([ev(ts=t) for t in arrival])
        assert p is not None
        expected = sessions_of(arrival)
        assert p.spans == expected and p.sessions == len(expected), arrival


def test_consent_sets_purposes():
    p = apply(None, ev("consent", None, T0, props={"email": False}))
    assert p.consents_to("email", True) is False
    assert p.consents_to("ads", True) is True
    assert p.consents_to("ads", False) is False
    p = apply(p, ev("consent", None, T0 + 1, props={"email": True, "ads": False}))
    assert p.consent == {"email": True, "ads": False}


def test_repeated_event_id_changes_nothing():
    first = ev("add_to_cart", "a", T0, event_id="dup")
    p = apply(None, first)
    again = apply(p, first)
    assert again is p
    assert again.cart == {"a": 1} and again.version == 1


def test_apply_does_not_mutate_its_input():
    p = apply(None, ev("add_to_cart", "a", T0))
    before = p.pack()
    apply(p, ev("add_to_cart", "a", T0 + 1))
    assert p.pack() == before


def test_dedup_forgets_ids_older_than_thirty_days_but_keeps_the_last_thousand():
    day = 86_400_000
    old = [ev(ts=T0 + i, event_id=f"old{i}") for i in range(DEDUP_IDS)]
    new = [ev(ts=T0 + 40 * day + i, event_id=f"new{i}") for i in range(DEDUP_IDS)]
    p = fold(old + new)
    assert p is not None and DEDUP_IDS <= len(p.seen) < DEDUP_IDS + BLOCK  # whole blocks go
    assert all(p.has_seen(f"new{i}") for i in range(DEDUP_IDS))
    assert not p.has_seen("old0")


def test_dedup_keeps_every_id_of_the_last_thirty_days_beyond_a_thousand():
    events = [ev(ts=T0 + i * 60_000, event_id=f"k{i}") for i in range(DEDUP_IDS + 500)]
    p = fold(events)
    assert p is not None and len(p.seen) == DEDUP_IDS + 500
    again = apply(p, events[0])
    assert again is p  # the very first id is still remembered: it is within 30 days


def test_dedup_memory_has_a_hard_cap(monkeypatch):
    import engine.profile

    cap = DEDUP_IDS + 100
    monkeypatch.setattr(engine.profile, "DEDUP_HARD_CAP", cap)
    p = fold([ev(ts=T0 + i, event_id=f"c{i}") for i in range(cap + 4 * BLOCK)])  # all recent
    assert p is not None and DEDUP_IDS <= len(p.seen) < cap + BLOCK
    assert not p.has_seen("c0") and p.has_seen(f"c{cap + 4 * BLOCK - 1}")


def test_profiles_stored_in_the_earlier_map_format_still_unpack():
    import msgpack

    p = fold([ev("add_to_cart", "a", T0), ev("purchase", "a", T0 + 1, price=3.0)])
    assert p is not None
    legacy = msgpack.packb(p.to_dict(), use_bin_type=True)
    assert Profile.unpack(legacy) == p
    assert len(p.pack()) < len(legacy)  # positions instead of keys


def test_pack_round_trip():
    p = fold([ev("add_to_cart", "a", T0), ev("consent", None, T0 + 1, props={"ads": False})])
    assert p is not None
    assert Profile.unpack(p.pack()) == p


def test_pack_keeps_every_field_in_its_place():
    """`pack` and `unpack` list the fields by position: every field holds a value no other field
    holds, so two fields swapped in either list fail here."""
    from array import array

    p = Profile(
        user_id="u",
        version=2,
        first_seen=3,
        last_seen=4,
        counts={"product_view": 5},
        recent=[("r", 6)],
        cart={"k": 7},
        cart_changed=8,
        purchased=[("p", 9)],
        orders=10,
        last_order="o",
        monetary=11.5,
        last_purchase=12,
        sessions=13,
        spans=[[14, 15]],
        carts_started=16,
        carts_converted=17,
        categories={"c": 18.0},
        brands={"b": 19.0},
        consent={"email": False},
        last_checkout=20,
        fired={"churn_risk": 21},
        seen=SeenIds.from_arrays(array("Q", [22]), array("I", [23])),
        consent_log={"email": ((False, 24, "s", "t"),)},
    )
    assert Profile.unpack(p.pack()) == p


def test_copy_is_equal_and_shares_nothing_mutable() -> None:
    from dataclasses import fields

    p = Profile(user_id="u")
    for n, kind in enumerate(["add_to_cart", "purchase", "product_view", "consent"]):
        p = apply(
            p,
            validate(
                {
                    "event_id": f"c{n}",
                    "type": kind,
                    "user_id": "u",
                    "item_id": "A",
                    "ts": 1_300_000_000_000 + n,
                    "price": 2.0,
                    "order_id": "o1",
                    "props": {"category": "c", "brand": "b", "email": False},
                }
            ),
        )
    p.fired["abandoned_cart"] = 1
    copied = p.copy()
    assert copied == p  # every field set (a field copy() forgot would make this raise)
    for f in fields(Profile):
        value = getattr(p, f.name)
        if isinstance(value, dict | list) or f.name == "seen":
            assert getattr(copied, f.name) is not value, f.name
    copied.cart["B"] = 1
    copied.seen.add(1, 1)
    assert "B" not in p.cart and 1 not in p.seen


def test_marked_sets_one_firing_and_leaves_its_origin_as_it_was() -> None:
    p = fold(
        [
            ev("add_to_cart", "i2", T0),
            ev("purchase", "i1", T0 + 1, price=2.5),
            ev("product_view", "i3", T0 + 2, props={"category": "c", "brand": "b"}),
        ]
    )
    p = p.marked("abandoned_cart", 5)
    marked = p.marked("churn_risk", 7)
    assert marked.fired == {"abandoned_cart": 5, "churn_risk": 7}
    assert p.fired == {"abandoned_cart": 5}  # the origin's firings are its own
    assert marked.copy() == marked  # every field set (one marked() forgot would raise here)
    assert Profile.unpack(marked.pack()) == marked
    origin = p.copy()
    marked.fired["x"] = 1  # its firings are a dict of its own
    # the shared containers stay shared only until a change: an event copies them first
    later = apply(marked, ev("add_to_cart", "i4", T0 + 3))
    assert later.cart == {"i2": 1, "i4": 1} and later.recent[0][0] == "i4"
    assert p == origin and p.cart == {"i2": 1}


def test_a_cancellation_or_return_takes_the_purchase_back():
    p = fold([ev("add_to_cart", "i2", T0), ev("purchase", "i1", T0 + 1, quantity=4, price=2.5)])
    assert p.purchased == [("i1", T0 + 1)] and p.monetary == 10.0
    orders, recent, categories = p.orders, list(p.recent), dict(p.categories)
    cancel = ev("purchase", "i1", T0 + 2, quantity=4, price=2.5, props={"cancelled": True})
    q = apply(p, cancel, product())
    assert q.purchased == [] and q.monetary == 0.0
    assert (q.orders, q.recent, q.categories) == (orders, recent, categories)  # no taste, no order
    assert q.cart == {"i2": 1}
    # a return stamped before a later purchase of the same item leaves that purchase alone
    again = apply(q, ev("purchase", "i1", T0 + 10, price=2.5))
    late = apply(again, ev("purchase", "i1", T0 + 5, props={"returned": True}, price=2.5))
    assert late.purchased == [("i1", T0 + 10)]
    assert apply(again, ev("purchase", "i1", T0 + 11, props={"returned": "yes"})).purchased == [
        ("i1", T0 + 11)
    ]  # only a boolean true reverses: this one is a purchase


def test_identify_is_counted_and_merges_nothing_yet():
    viewed = apply(None, ev(user="anon-7"))
    before = apply(None, ev("page_view", item=None, user="u7"))
    after = apply(before, ev("identify", item=None, user="u7", props={"previous_id": "anon-7"}))
    assert after.counts == {"page_view": 1, "identify": 1}
    assert after.recent == before.recent and after.cart == before.cart == {}
    assert viewed.recent and not after.recent  # the anonymous history stays where it was


def test_readable_profiles_passes_over_rows_that_do_not_unpack() -> None:
    """A sample of the profiles table (the user list, the churn histogram) must not fail on one
    row a producer of the changelog wrote (tests/streams/test_hostile_internal.py)."""
    from engine.profile import new_profile, readable_profiles

    good = [new_profile(f"u{i}") for i in range(3)]
    rows = [b"\xc1", good[0].pack(), b"", good[1].pack(), b"\x93\x01\x02\x03", good[2].pack()]
    assert [p.user_id for p in readable_profiles(rows, 10)] == ["u0", "u1", "u2"]
    assert [p.user_id for p in readable_profiles(rows, 2)] == ["u0", "u1"]
