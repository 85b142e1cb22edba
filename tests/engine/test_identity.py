"""The pure merge of an anonymous profile into a user's (issue 19 item 2)."""

from engine.identity import MERGE_SOURCE, merge, merge_key
from engine.profile import (
    CART_LINES,
    CART_QUANTITY,
    DEDUP_HARD_CAP,
    HISTORY_ITEMS,
    HISTORY_SLACK,
    RECENT_ITEMS,
    TOP_AFFINITIES,
    Profile,
    apply,
    fold,
)
from streams.app import MAX_PROFILE_BYTES
from tests.engine.test_profile import T0, ev

MIN = 60_000


def anon_and_user() -> tuple[Profile, Profile]:
    anon = fold(
        [
            ev("product_view", "a1", T0, user="anon", props={"category": "Lamps"}),
            ev("add_to_cart", "a2", T0 + MIN, user="anon", quantity=2, props={"category": "Lamps"}),
            ev("product_view", "shared", T0 + 5 * MIN, user="anon", event_id="same-id"),
        ]
    )
    user = fold(
        [
            ev("product_view", "u1", T0 + 2 * MIN, user="alice", props={"brand": "Acme"}),
            ev("add_to_cart", "a2", T0 + 3 * MIN, user="alice", quantity=1),
            ev("purchase", "p1", T0 + 4 * MIN, user="alice", price=3.0, order_id="o1"),
        ]
    )
    assert anon is not None and user is not None
    return anon, user


def test_every_field_of_the_anonymous_history_reaches_the_user():
    anon, user = anon_and_user()
    out = merge(user, anon, "alice")
    assert out.user_id == "alice" and out.version == user.version + 1
    assert out.counts == {"product_view": 3, "add_to_cart": 2, "purchase": 1}
    assert out.cart == {"a2": 3}  # 2 anonymous + 1 of the user's
    assert [i for i, _ in out.recent] == ["shared", "p1", "a2", "u1", "a1"]  # by time
    assert set(out.history) == {"a1", "a2", "shared", "u1", "p1"}
    assert out.history["a2"][1] == 2  # one signal on each side
    assert out.categories["Lamps"] == anon.categories["Lamps"]
    assert out.brands == user.brands
    assert out.first_seen == T0 and out.last_seen == T0 + 5 * MIN
    assert out.orders == 1 and out.monetary == 3.0
    assert out.carts_started == 2
    assert out.sessions == 1 and out.spans == [[T0, T0 + 5 * MIN]]  # one visit, joined
    assert out.has_seen("same-id")  # the anonymous event is not folded again
    assert apply(out, ev("product_view", "shared", T0, user="alice", event_id="same-id")) is out


def test_merge_into_no_profile_starts_the_user_with_the_history():
    anon, _ = anon_and_user()
    out = merge(None, anon, "bob")
    assert out.user_id == "bob" and out.cart == anon.cart and out.recent == anon.recent
    assert out.counts == anon.counts and out.version == 1


def test_a_redelivered_merge_changes_nothing_and_inputs_stay_untouched():
    anon, user = anon_and_user()
    before = (user.pack(), anon.pack())
    once = merge(user, anon, "alice")
    assert merge(once, anon, "alice") is once
    assert (user.pack(), anon.pack()) == before
    assert merge_key(anon) in once.seen
    later = apply(anon, ev("product_view", "a9", T0 + 9 * MIN, user="anon"))
    assert merge_key(later) != merge_key(anon)  # a newer version is another merge


def test_merge_respects_every_bound():
    user = Profile("alice")
    anon = Profile("anon")
    for n in range(CART_LINES):
        user.cart[f"u{n}"] = CART_QUANTITY
        anon.cart[f"u{n}" if n % 2 else f"a{n}"] = CART_QUANTITY
    for n in range(HISTORY_ITEMS + HISTORY_SLACK):
        user.history[f"u{n}"] = (n, 65_535)
        anon.history[f"a{n}"] = (n + 1, 1)
    for n in range(TOP_AFFINITIES):
        user.categories[f"u{n}"] = float(n)
        anon.categories[f"a{n}"] = float(n) + 0.5
    user.recent = [(f"u{n}", T0 - n) for n in range(RECENT_ITEMS)]
    anon.recent = [(f"a{n}", T0 - n) for n in range(RECENT_ITEMS)]
    for n in range(DEDUP_HARD_CAP):
        user.seen.add(n, T0 // 1000)
        anon.seen.add(10**9 + n, T0 // 1000)
    user.last_seen = anon.last_seen = T0
    out = merge(user, anon, "alice")
    assert len(out.cart) == CART_LINES and max(out.cart.values()) == CART_QUANTITY
    assert len(out.history) == HISTORY_ITEMS
    assert len(out.categories) == TOP_AFFINITIES
    assert len(out.recent) == RECENT_ITEMS and out.recent[0] == ("a0", T0)
    assert len(out.seen) <= DEDUP_HARD_CAP + 512  # the fold's bound (and its one block)
    assert len(out.pack()) < MAX_PROFILE_BYTES


def consent(user: str, ts: int, **purposes: bool):
    return ev("consent", None, ts, user=user, props=dict(purposes))


def test_a_withdrawal_of_the_anonymous_id_is_not_overridden():
    anon = fold([consent("anon", T0, personalization=False)])
    user = fold([consent("alice", T0 + MIN, personalization=True, email=True)])
    assert anon is not None and user is not None
    out = merge(user, anon, "alice")
    assert out.consent == {"personalization": False, "email": True}
    newest = out.consent_log["personalization"][0]
    assert newest[0] is False and newest[2] == MERGE_SOURCE
    regranted = apply(out, consent("alice", T0 + 2 * MIN, personalization=True))
    assert regranted.consent is not None and regranted.consent["personalization"] is True


def test_a_withdrawal_of_the_user_is_not_overridden_by_the_anonymous_grant():
    anon = fold([consent("anon", T0 + MIN, ads=True)])
    user = fold([consent("alice", T0, ads=False)])
    assert anon is not None and user is not None
    out = merge(user, anon, "alice")
    assert out.consent == {"ads": False}
    assert merge(Profile("bob"), anon, "bob").consent == {"ads": True}
