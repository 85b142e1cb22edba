"""A user's locale and spend per currency in the profile (issue 19 item 6): the newest valid
`props.locale` of any event, invalid tags ignored; spend kept per currency and never added across
currencies; `monetary` features in the user's main currency; both survive every stored format,
old profiles load, and the identity merge combines them."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from engine.catalog import Product
from engine.events import Event, validate
from engine.features import FEATURE_NAMES, features
from engine.identity import merge
from engine.profile import SPEND_CURRENCIES, Profile, apply, fold
from models.registry import ModelSet

T0 = 1_700_000_000_000
DAY = 86_400_000
_n = [0]


def ev(type_: str = "page_view", ts: int = T0, user: str = "u1", **kw: Any) -> Event:
    _n[0] += 1
    data = {"event_id": f"e{_n[0]}", "type": type_, "user_id": user, "ts": ts, **kw}
    return validate(data)


def identify(locale: Any, ts: int = T0, user: str = "u1") -> Event:
    return ev("identify", ts, user, props={"previous_id": "anon-1", "locale": locale})


def buy(price: float, currency: str | None, ts: int = T0, order: str = "", **kw: Any) -> Event:
    money = {"price": price} | ({"currency": currency} if currency else {})
    props = {"order_id": order or f"o{ts}"} | kw
    return ev("purchase", ts, item_id=f"i{ts}", props=props, **money)


def test_identify_sets_the_locale_in_canonical_case() -> None:
    assert fold([identify("pl-pl")]).locale == "pl-PL"  # type: ignore[union-attr]


def test_any_events_props_locale_sets_it_and_the_newest_by_event_time_wins() -> None:
    p = fold([ev(props={"locale": "de-DE"}, ts=T0 + 10), ev(props={"locale": "en-GB"}, ts=T0)])
    assert p is not None and p.locale == "de-DE"  # the older event came later: ignored
    p = apply(p, ev("add_to_cart", T0 + 20, item_id="a", props={"locale": "pl"}))
    assert p.locale == "pl" and p.locale_at == T0 + 20


@pytest.mark.parametrize("bad", ["not a tag", "pl_PL", "x" * 300, 42, True, ["pl"], {"a": "b"}, ""])
def test_an_invalid_locale_is_ignored_and_the_event_still_counts(bad: Any) -> None:
    p = fold([ev(props={"locale": "de-DE"}), ev(props={"locale": bad}, ts=T0 + 1)])
    assert p is not None and p.locale == "de-DE" and p.counts["page_view"] == 2


def test_the_locale_and_spend_survive_pack_and_the_map_format() -> None:
    p = fold([identify("pl-PL"), buy(10.0, "PLN"), buy(3.0, "EUR", T0 + 1)])
    assert p is not None
    for again in (Profile.unpack(p.pack()), Profile.unpack(msgpack.packb(p.to_dict()))):
        assert (again.locale, again.locale_at, again.spend) == (p.locale, p.locale_at, p.spend)
        assert again.monetary == p.monetary


def test_a_profile_stored_before_locales_loads_with_its_spend_unchanged() -> None:
    p = fold([buy(10.0, "GBP", T0, "a"), buy(5.0, "GBP", T0 + 1, "b")])
    assert p is not None
    fields = list(msgpack.unpackb(p.pack(), raw=False))
    older = Profile.unpack(msgpack.packb(fields[:27], use_bin_type=True))  # up to the history
    assert older.locale == "" and older.spend == {"": (15.0, 2)}
    assert older.monetary == 15.0 and features(older, T0) == features(p, T0)
    old_map = {k: v for k, v in p.to_dict().items() if k not in ("lg", "sp")}
    assert Profile.unpack(msgpack.packb(old_map)).spend == {"": (15.0, 2)}
    assert Profile.unpack(msgpack.packb(fields[:26])).spend == {"": (15.0, 2)}
    never_bought = fold([ev()])
    assert never_bought is not None and Profile.unpack(never_bought.pack()).spend == {}


def test_spend_in_two_currencies_is_never_added_together() -> None:
    p = fold([buy(100.0, "PLN", T0, "a"), buy(40.0, "PLN", T0 + 1, "b"), buy(7.0, "EUR", T0 + 2)])
    assert p is not None
    assert p.spend == {"PLN": (140.0, 2), "EUR": (7.0, 1)}
    assert p.main_currency == "PLN" and p.monetary == 140.0
    vector = dict(zip(FEATURE_NAMES, features(p, T0 + DAY), strict=True))
    assert vector["monetary"] == 140.0 and vector["avg_order_value"] == 70.0
    assert vector["orders"] == 3.0


def test_a_purchase_priced_by_the_catalog_counts_in_the_products_currency() -> None:
    product = Product("a", "A", "https://x.example/a", "https://x.example/a.jpg", 9.5, "EUR")
    p = apply(None, ev("purchase", item_id="a", quantity=2), product)
    assert p.spend == {"EUR": (19.0, 1)} and p.monetary == 19.0
    p = apply(p, ev("purchase", T0 + DAY, item_id="b", price=4.0))  # no currency, no product
    assert p.spend == {"EUR": (19.0, 1), "": (4.0, 1)}


def test_the_main_currency_follows_the_orders_not_a_sum_of_amounts() -> None:
    p = fold([buy(1000.0, "PLN", T0, "a")] + [buy(5.0, "EUR", T0 + i, f"e{i}") for i in (1, 2)])
    assert p is not None and p.main_currency == "EUR" and p.monetary == 10.0


def test_a_reversal_takes_the_spend_back_in_its_own_currency() -> None:
    p = fold([buy(20.0, "PLN", T0, "a"), buy(8.0, "EUR", T0 + 1, "b")])
    assert p is not None
    p = apply(p, buy(8.0, "EUR", T0 + 2, "b", cancelled=True))
    assert p.spend == {"PLN": (20.0, 1), "EUR": (0.0, 1)}


def test_the_spend_map_is_bounded_and_keeps_the_main_currency() -> None:
    codes = [f"C{chr(65 + i)}A" for i in range(SPEND_CURRENCIES + 5)]
    events = [buy(1.0, "PLN", T0 + i, f"p{i}") for i in range(3)]
    events += [buy(1.0, code, T0 + 10 + i, code) for i, code in enumerate(codes)]
    p = fold(events)
    assert p is not None and len(p.spend) == SPEND_CURRENCIES
    assert p.main_currency == "PLN" and codes[-1] in p.spend


def test_the_default_churn_model_scores_profiles_with_several_currencies() -> None:
    p = fold([identify("pl-PL"), buy(100.0, "PLN", T0, "a"), buy(7.0, "EUR", T0 + 1, "b")])
    assert p is not None
    vector = features(p, T0 + 30 * DAY)
    assert len(vector) == len(FEATURE_NAMES) == 16
    score = ModelSet.default().churn.score(vector)
    assert 0.0 <= score <= 1.0


def test_the_identity_merge_adds_spend_per_currency_and_takes_the_newer_locale() -> None:
    user = fold([ev(props={"locale": "en-GB"}, ts=T0), buy(10.0, "GBP", T0, "a")])
    anon = fold([ev(user="anon", props={"locale": "pl-PL"}, ts=T0 + 5)])
    assert user is not None and anon is not None
    anon = apply(anon, validate({**buy(50.0, "PLN", T0 + 6, "b").to_dict(), "user_id": "anon"}))
    merged = merge(user, anon, "u1")
    assert merged.locale == "pl-PL" and merged.spend == {"GBP": (10.0, 1), "PLN": (50.0, 1)}
    assert merged.monetary == 50.0  # one currency's (tied orders: the larger amount), not 60
    older = fold([ev(user="anon2", props={"locale": "de"}, ts=T0 - 5)])
    assert older is not None and merge(user, older, "u1").locale == "en-GB"
