"""Popularity contributions: nobody can buy the best-seller list (issue 14, item 6).

Events are folded as the worker folds them: each user's profile through `engine.profile.apply`,
the contributions of each event summed per item as the popularity agent sums them."""

from __future__ import annotations

import itertools

import pytest

from engine.events import Event, validate
from engine.popularity import (
    CART_WEIGHT,
    EPSILON,
    HALF_LIFE_MS,
    PURCHASE_WEIGHT,
    Score,
    Tally,
    contributions,
    merge,
    rank_key,
)
from engine.profile import RECENT_PURCHASES, Profile, apply
from engine.ranking import TopK

T0 = 1_700_000_000_000
MINUTE = 60_000
_ids = itertools.count()


def ev(type_: str, user: str, item: str, ts: int = T0, **kw: object) -> Event:
    data = {"event_id": f"e{next(_ids)}", "type": type_, "user_id": user, "ts": ts, "item_id": item}
    return validate({**data, **kw})


class Board:
    """Profiles and the popularity table, folded as the worker and its popularity agent do."""

    def __init__(self) -> None:
        self.profiles: dict[str, Profile] = {}
        self.table: dict[str, Score] = {}

    def fold(self, *events: Event) -> None:
        tally = Tally()
        for event in events:
            before = self.profiles.get(event.user_id)
            after = apply(before, event)
            tally.add(contributions(before, after, event))
            self.profiles[event.user_id] = after
        for item, delta in tally.items():
            stored = Score.unpack(self.table.get(item, Score()).pack()) or Score()
            self.table[item] = stored.plus(delta.value, delta.ts)

    def value(self, item: str, at: int = T0) -> float:
        """The item's score as of event time `at`."""
        score = self.table.get(item, Score())
        assert score.ts <= at, "asked for a time before the newest contribution"
        return score.plus(0.0, at).value

    def ranked(self) -> list[str]:
        top = TopK(10)
        for item, score in self.table.items():
            key = rank_key(score.pack())
            if key is not None:
                top.add(key, item)
        return top.ranked()


def test_a_million_units_add_no_more_than_one_buyer() -> None:
    board = Board()
    board.fold(ev("add_to_cart", "anon-1", "X", quantity=1_000_000))
    assert board.value("X") == pytest.approx(CART_WEIGHT)
    board.fold(*(ev("purchase", f"buyer-{n}", "Y", T0 + n) for n in range(3)))
    assert board.ranked() == ["Y", "X"]

    board.fold(ev("purchase", "anon-1", "X", T0 + 10, quantity=1_000_000))
    board.fold(ev("purchase", "normal", "Z", T0 + 10))
    assert board.value("X", T0 + 10) == pytest.approx(PURCHASE_WEIGHT)
    assert board.value("X", T0 + 10) == pytest.approx(board.value("Z", T0 + 10))


def test_repeating_events_does_not_add_up() -> None:
    board = Board()
    board.fold(*(ev("add_to_cart", "u", "X", T0 + n) for n in range(100)))
    assert board.value("X", T0 + 100) == pytest.approx(CART_WEIGHT)
    board.fold(*(ev("purchase", "u", "X", T0 + 100 + n) for n in range(100)))
    assert board.value("X", T0 + 200) == pytest.approx(PURCHASE_WEIGHT)


def test_cart_cycles_can_neither_grow_nor_sink_an_item() -> None:
    """Adding and removing again and again, at times far apart, leaves exactly nothing."""
    board = Board()
    board.fold(ev("purchase", "honest", "X", T0))
    for n in range(50):
        added, removed = T0 + n * 3 * 86_400_000, T0 + n * 3 * 86_400_000 + 86_400_000
        before = board.value("X", added)
        board.fold(ev("add_to_cart", "cycler", "X", added, quantity=1_000_000))
        assert board.value("X", added) == pytest.approx(before + CART_WEIGHT)
        board.fold(ev("remove_from_cart", "cycler", "X", removed, quantity=1_000_000))
    end = T0 + 150 * 86_400_000
    honest_alone = Score(PURCHASE_WEIGHT, T0).plus(0.0, end).value
    assert board.value("X", end) == pytest.approx(honest_alone, rel=1e-9)


def test_bought_then_cancelled_is_net_zero() -> None:
    """UCI's 80,995 units of 23843, cancelled 12 minutes later (invoice C581484)."""
    board = Board()
    board.fold(ev("purchase", "16446", "23843", T0, quantity=80_995, price=2.08))
    assert board.ranked() == ["23843"]
    board.fold(ev("purchase", "other", "22197", T0 + MINUTE))
    cancel = {"cancelled": True, "order_id": "C581484"}
    board.fold(ev("purchase", "16446", "23843", T0 + 12 * MINUTE, quantity=80_995, props=cancel))
    assert abs(board.value("23843", T0 + 12 * MINUTE)) < EPSILON
    assert board.ranked() == ["22197"]
    # a second cancellation of the same line takes nothing more
    board.fold(ev("purchase", "16446", "23843", T0 + 13 * MINUTE, quantity=5, props=cancel))
    assert abs(board.value("23843", T0 + 13 * MINUTE)) < EPSILON


def test_a_return_weeks_later_takes_back_exactly_what_is_left() -> None:
    board = Board()
    board.fold(ev("purchase", "u", "X", T0), ev("purchase", "v", "X", T0))
    later = T0 + 30 * 86_400_000
    board.fold(ev("purchase", "u", "X", later, props={"returned": True}))
    assert board.value("X", later) == pytest.approx(Score(1.0, T0).plus(0.0, later).value)


def test_only_a_true_flag_reverses_and_nothing_reverses_what_was_not_bought() -> None:
    board = Board()
    board.fold(ev("purchase", "u", "X"))
    board.fold(ev("purchase", "u", "X", T0 + 1, props={"cancelled": "true"}))  # a string
    assert board.value("X", T0 + 1) == pytest.approx(PURCHASE_WEIGHT)
    board.fold(ev("purchase", "w", "Y", T0 + 2, props={"cancelled": True}))
    assert board.value("Y", T0 + 2) == 0.0 and "Y" not in board.ranked()


def test_a_buyer_counts_once_even_when_cycling_through_many_items() -> None:
    """Pushing an item out of the recent purchases takes its stake back: buying the same items
    round and round adds nothing beyond one stake per item kept."""
    board = Board()
    items = [f"i{n}" for n in range(RECENT_PURCHASES + 1)]
    for round_ in range(3):
        board.fold(*(ev("purchase", "u", i, T0 + round_ * 100 + n) for n, i in enumerate(items)))
    total = sum(board.value(i, T0 + 300) for i in items)
    assert total <= RECENT_PURCHASES * PURCHASE_WEIGHT + EPSILON


def test_decay_halves_after_the_half_life() -> None:
    board = Board()
    board.fold(ev("purchase", "u", "X", T0))
    assert board.value("X", T0 + int(HALF_LIFE_MS)) == pytest.approx(0.5)
    assert board.value("X", T0 + 2 * int(HALF_LIFE_MS)) == pytest.approx(0.25)
    # one sale a half-life later weighs what two sales then did; three then weigh more
    board.fold(ev("purchase", "a", "Y", T0), ev("purchase", "b", "Y", T0))
    board.fold(*(ev("purchase", f"c{n}", "Z", T0) for n in range(3)))
    board.fold(ev("purchase", "u", "W", T0 + int(HALF_LIFE_MS)))
    assert board.ranked()[0] == "Z" and board.ranked()[-1] == "X"
    assert rank_key(board.table["W"].pack()) == pytest.approx(rank_key(board.table["Y"].pack()))


def test_ranking_uses_event_time_not_the_order_of_arrival() -> None:
    """A replay of old data ranks as it would have then: what matters is event time."""
    first, second = Board(), Board()
    old = [ev("purchase", f"u{n}", "OLD", T0) for n in range(3)]
    new = [ev("purchase", "v", "NEW", T0 + 5 * int(HALF_LIFE_MS))]
    first.fold(*old)
    first.fold(*new)
    second.fold(*new)
    second.fold(*old)
    assert first.ranked() == second.ranked() == ["NEW", "OLD"]


def test_trending_a_recent_burst_outranks_an_old_all_time_seller_and_then_fades() -> None:
    """Best-sellers are trending, not all-time (issue 17 item 4): 40 buyers of OLD over its first
    ten weeks count less than 6 buyers of NEW this week; when NEW stops selling and OLD sells
    one a week again, OLD is back on top within weeks."""
    day = 86_400_000
    board = Board()
    board.fold(*(ev("purchase", f"old{n}", "OLD", T0 + n * 7 * day // 4) for n in range(40)))
    now = T0 + 100 * day  # a month after OLD's last sale
    board.fold(*(ev("purchase", f"new{n}", "NEW", now - n * day // 2) for n in range(6)))
    assert board.ranked() == ["NEW", "OLD"]
    assert board.value("OLD", now) < board.value("NEW", now)  # though 40 buyers against 6
    for week in range(1, 9):
        board.fold(ev("purchase", f"steady{week}", "OLD", now + week * 7 * day))
    assert board.ranked() == ["OLD", "NEW"]


def test_packed_scores_round_trip_and_anything_else_is_ignored() -> None:
    score = Score(2.5, T0)
    assert Score.unpack(score.pack()) == score
    assert rank_key(score.pack()) == pytest.approx(1.3219280948873624 + T0 / HALF_LIFE_MS)
    assert rank_key(Score(0.0, T0).pack()) is None and rank_key(Score(-1.0, T0).pack()) is None
    old_sum = b"161990.2"  # a quantity sum of the versions before (no time): dropped
    for raw in (old_sum, b"", None, b"nan 1 2", b"1e300 1 2", b"1 -5 2", b"\xff\xfe", b"1 " * 80):
        assert Score.unpack(raw) is None
    assert rank_key(old_sum) is None and rank_key(b"1 2 inf") is None


def test_views_and_duplicates_contribute_nothing() -> None:
    profile = apply(None, ev("purchase", "u", "X"))
    view = ev("product_view", "u", "X", T0 + 1)
    assert list(contributions(profile, apply(profile, view), view)) == []
    repeat = ev("purchase", "u", "X", event_id="same")
    once = apply(profile, repeat)
    assert list(contributions(once, apply(once, repeat), repeat)) == []


def test_merge_adds_the_contributions_to_the_stored_score_and_ignores_what_is_not_one() -> None:
    day = 86_400_000
    stored = Score(2.0, 10 * day).pack()
    merged = Score.unpack(merge(stored, [Score(1.0, 10 * day), Score(0.5, 12 * day)]))
    expected = Score(2.0, 10 * day).plus(1.0, 10 * day).plus(0.5, 12 * day)
    assert merged is not None and merged.ts == 12 * day
    assert merged.value == pytest.approx(expected.value)
    # a stored value that is not a packed score (an older version's quantity sum, garbage)
    # counts as none: the contributions alone
    for junk in (None, b"", b"12", b"nan 5 -", b"\xff" * 10):
        alone = Score.unpack(merge(junk, [Score(1.0, day)]))
        assert alone == Score(1.0, day)
