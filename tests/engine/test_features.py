from engine.events import validate
from engine.features import DAY_MS, FEATURE_NAMES, features, log_scale
from engine.profile import fold

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
