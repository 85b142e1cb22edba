from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import validate
from engine.features import DAY_MS, FEATURE_NAMES, SOCIAL, features, log_scale
from engine.profile import Profile, fold

T0 = 1_700_000_000_000


def test_feature_vector_matches_names_and_rfm():
    events = [
        validate(
            {
                "event_id": "1",
                "type": "purchase",
                "user_id": "u",
                "ts": T0,
                "item_id": "a",
                "price": 10.0,
                "props": {"order_id": "o1"},
            }
        ),
        validate(
            {
                "event_id": "2",
                "type": "add_to_cart",
                "user_id": "u",
                "ts": T0 + DAY_MS,
                "item_id": "b",
            }
        ),
    ]
    p = fold(events)
    assert p is not None
    f = dict(zip(FEATURE_NAMES, features(p, T0 + 11 * DAY_MS), strict=True))
    assert f["recency_days"] == 10.0
    assert f["purchase_recency_days"] == 11.0
    assert f["orders"] == 1.0 and f["monetary"] == 10.0 and f["avg_order_value"] == 10.0
    assert f["cart_adds"] == 1.0 and f["cart_abandonment"] == 1.0


def test_log_scale_is_monotonic_and_signed():
    assert log_scale([0.0, 1.0, -1.0]) == [0.0, log_scale([1.0])[0], -log_scale([1.0])[0]]


def _orders(days: list[int]) -> list:
    return [
        validate(
            {
                "event_id": f"o{d}",
                "type": "purchase",
                "user_id": "u",
                "ts": T0 + d * DAY_MS,
                "item_id": "a",
                "price": 5.0,
                "props": {"order_id": f"o{d}"},
            }
        )
        for d in days
    ]


def test_days_between_orders_and_overdue_from_the_order_gaps():
    p = fold(_orders([0, 10, 30]))  # two gaps, 30 days in all: 15 days on average
    assert p is not None
    f = dict(zip(FEATURE_NAMES, features(p, T0 + 60 * DAY_MS), strict=True))
    assert f["days_between_orders"] == 15.0
    assert f["purchase_overdue"] == 2.0  # 30 days since the last order: two usual gaps


def test_one_order_counts_the_days_observed_as_the_gap():
    p = fold(_orders([0]))
    assert p is not None
    f = dict(zip(FEATURE_NAMES, features(p, T0 + 40 * DAY_MS), strict=True))
    assert f["days_between_orders"] == 40.0
    assert f["purchase_overdue"] == 1.0
    same_day = dict(zip(FEATURE_NAMES, features(p, T0), strict=True))
    assert same_day["purchase_overdue"] == 0.0  # a gap below a day divides by one day


def _plain(profile: Profile, now_ms: int) -> list[float]:
    """The features as plain formulas (what engine.features computed before it was written out
    flat for speed): `features` must give these numbers bit for bit."""
    now_ms = max(now_ms, profile.last_seen)

    def days(ms: int) -> float:
        return max(0.0, (now_ms - ms) / DAY_MS)

    tenure = days(profile.first_seen) if profile.first_seen else 0.0
    orders = float(profile.orders)
    started = profile.carts_started
    abandonment = max(0.0, 1.0 - profile.carts_converted / started) if started else 0.0
    counts = profile.counts
    since_purchase = days(profile.last_purchase) if profile.last_purchase else tenure
    gap = tenure
    if profile.orders >= 2 and profile.last_purchase:
        gap = max(0.0, (profile.last_purchase - profile.first_seen) / DAY_MS) / (profile.orders - 1)
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
        float(sum(counts.get(t, 0) for t in SOCIAL)),
        gap,
        since_purchase / max(gap, 1.0),
    ]


_times = st.integers(min_value=0, max_value=T0 + 400 * DAY_MS)
_kinds = st.sampled_from(["product_view", "add_to_cart", "purchase", "like", "share", "follow"])


@settings(max_examples=300, deadline=None)
@given(
    first=_times,
    last=_times,
    purchase=_times,
    now=_times,
    orders=st.integers(min_value=0, max_value=50),
    started=st.integers(min_value=0, max_value=20),
    converted=st.integers(min_value=0, max_value=30),
    sessions=st.integers(min_value=0, max_value=500),
    counts=st.dictionaries(_kinds, st.integers(min_value=0, max_value=10_000), max_size=6),
    spend=st.dictionaries(
        st.sampled_from(["", "EUR", "GBP", "USD"]),
        st.tuples(st.floats(min_value=0.0, max_value=1e9), st.integers(min_value=0, max_value=50)),
        max_size=4,
    ),
    bought=st.integers(min_value=0, max_value=5),
)
def test_features_are_the_plain_formulas_bit_for_bit(
    first: int,
    last: int,
    purchase: int,
    now: int,
    orders: int,
    started: int,
    converted: int,
    sessions: int,
    counts: dict[str, int],
    spend: dict[str, tuple[float, int]],
    bought: int,
) -> None:
    # times in any order (now before last_seen, a purchase before first_seen), zeros included
    profile = Profile("u", first_seen=first, last_seen=last, last_purchase=purchase)
    profile.orders, profile.carts_started, profile.carts_converted = orders, started, converted
    profile.sessions, profile.counts, profile.spend = sessions, counts, spend
    profile.purchased = [(f"i{n}", first) for n in range(bought)]
    got, want = features(profile, now), _plain(profile, now)
    assert [type(x) for x in got] == [float] * len(FEATURE_NAMES)
    assert [x.hex() for x in got] == [x.hex() for x in want]
