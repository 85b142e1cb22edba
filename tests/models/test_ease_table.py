"""EASE's weights served as the default neighbour table (issue 17 item 4)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from engine.events import Event
from models import ease_table as ease_module
from models.ease_table import (
    AUTO,
    AUTO_HOLDOUT,
    AUTO_USERS,
    TABLE_LAMBDA,
    Table,
    choose_lambda,
    chosen,
    ease_table,
    lambda_metrics,
    sorted_interactions,
    top_positive,
)
from models.evaluate import held_history, leave_last_n, sample
from models.peers import Case
from models.recs import Recommender, _histories, fit_recommender, neighbour_table
from models.train import train_all
from tests.models.synthetic import DAY, T0, basket_events, purchase


def _row(table: Table, item: str) -> dict[str, float]:
    items, indptr, neighbours, weights = table
    i = items.index(item)
    start, end = int(indptr[i]), int(indptr[i + 1])
    return {
        items[j]: float(w) for j, w in zip(neighbours[start:end], weights[start:end], strict=True)
    }


def test_top_positive_keeps_the_k_largest_positive_entries_best_first() -> None:
    row = np.array([0.5, -1.0, 0.0, 2.0, 0.5, 0.1])
    assert top_positive(row, 3).tolist() == [3, 0, 4]  # ties by index
    assert top_positive(row, 10).tolist() == [3, 0, 4, 5]
    assert top_positive(-np.ones(3), 2).tolist() == []


def test_each_item_keeps_its_partner_as_its_best_neighbour() -> None:
    events = basket_events()
    cosine = neighbour_table(_histories(events, ()), 5)
    table = ease_table(events, 5, (), cosine, lam=1.0)
    assert table[0] == cosine[0] == sorted_interactions(events, ()).items
    for item, partner in (("a", "a2"), ("b2", "b"), ("c", "c2")):
        row = _row(table, item)
        assert max(row, key=lambda j: row[j]) == partner
        assert all(w > 0 for w in row.values()) and item not in row


def test_items_beyond_the_cap_keep_their_cosine_rows() -> None:
    events = basket_events()
    cosine = neighbour_table(_histories(events, ()), 5)
    table = ease_table(events, 5, (), cosine, lam=1.0, max_items=2)
    for item in cosine[0]:
        if item in ("pop", "pop2"):
            assert set(_row(table, item)) <= {"pop", "pop2"}
        else:
            assert _row(table, item) == _row(cosine, item)


def test_the_default_recommender_is_trained_on_the_ease_table() -> None:
    events = basket_events()
    ease = fit_recommender(events, k=5)
    cosine = fit_recommender(events, k=5, table="cosine")
    assert not np.array_equal(ease.weights, cosine.weights)
    assert ease.recommend([("a", 1)], {"a"}, 1) == ["a2"]
    with pytest.raises(ValueError, match="unknown neighbour table"):
        fit_recommender(events, table="svd")


# -- the lambda searched for on the training data (issue 17 item 2) ---------------------------


def shop_events(group_size: int, users: int = 150, seed: int = 5) -> list[Event]:
    """Each user buys 8 items of one of 5 groups of `group_size` and 3 of 40 unrelated items,
    ten days apart, in a random order: their last items are mostly of their group."""
    rng = random.Random(seed)
    events: list[Event] = []
    for u in range(users):
        items = [f"g{u % 5}-{i}" for i in rng.sample(range(group_size), 8)]
        items += [f"n{rng.randrange(40)}" for _ in range(3)]
        rng.shuffle(items)
        for step, item in enumerate(items):
            events.append(purchase(f"u{u}", item, T0 + u * DAY + step * 10 * DAY))
    return events


def served_hit_rate(train: Sequence[Event], lam: float, cases: Sequence[Case]) -> float:
    """HR@10 of the table trained with `lam` alone, served with the default settings."""
    cosine = fit_recommender(train, 5, table="cosine")
    fallback = (cosine.items, cosine.indptr, cosine.neighbours, cosine.weights)
    model = Recommender("t", "", *ease_table(train, 5, (), fallback, lam=lam), cosine.popular, k=5)
    exclude = [{i for i, _ in c.history} for c in cases]
    lists = [model.recommend(held_history(c), ex, 10) for c, ex in zip(cases, exclude, strict=True)]
    return sum(bool(set(r) & c.targets) for r, c in zip(lists, cases, strict=True)) / len(cases)


@pytest.mark.parametrize("group_size", [30, 60])
def test_the_search_picks_the_lambda_best_on_the_held_out_last_items(group_size: int) -> None:
    events = shop_events(group_size)
    grid = (1.0, 100.0, 1e5)
    choice = choose_lambda(events, 5, grid=grid)
    train, cases = leave_last_n(events, AUTO_HOLDOUT)
    cases = sample(cases, AUTO_USERS)
    expected = {lam: served_hit_rate(train, lam, cases) for lam in grid}
    assert len(set(expected.values())) > 1  # the data set tells the lambdas apart
    assert choice.hr == pytest.approx(expected)  # one Gram matrix for the grid: the same figures
    assert choice.lam == max(grid, key=lambda lam: expected[lam])
    assert choice.users == len(cases) == 150


def test_with_too_few_users_to_hold_out_the_fixed_lambda_stays() -> None:
    choice = choose_lambda(basket_events(), 5)  # nobody has more than 5 distinct items
    assert (choice.lam, choice.hr, choice.users) == (TABLE_LAMBDA, {}, 0)


def test_auto_trains_the_table_with_the_lambda_the_search_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = shop_events(60)
    monkeypatch.setattr(ease_module, "LAMBDAS", (1e5, 1.0))
    choice = chosen(events, 5)
    assert choice.lam == 1.0 != TABLE_LAMBDA  # group_size 60 favours the small lambda
    cosine = neighbour_table(_histories(events, ()), 5)
    auto = ease_table(events, 5, (), cosine, lam=AUTO)
    for want, lam in ((True, 1.0), (False, 1e5), (False, TABLE_LAMBDA)):
        fixed = ease_table(events, 5, (), cosine, lam=lam)
        assert all(np.array_equal(a, b) for a, b in zip(auto[1:], fixed[1:], strict=True)) == want
    default = fit_recommender(events, 5)  # the default recommender searches too
    assert ease_module.DEFAULT_LAMBDA == AUTO
    assert np.array_equal(default.weights, auto[3]) and np.array_equal(default.indptr, auto[1])


def test_the_trained_model_records_the_lambda_and_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = shop_events(60)
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
    monkeypatch.setattr(ease_module, "DEFAULT_LAMBDA", AUTO)
    monkeypatch.setattr(ease_module, "LAMBDAS", (1e5, 1.0))
    train_all(path, tmp_path / "out", horizon_days=30, k=5)
    metrics = json.loads((tmp_path / "out" / "recs.json").read_text())["metrics"]
    search = choose_lambda(events, 5, grid=(1e5, 1.0))
    assert metrics["ease_lambda"] == search.lam == 1.0
    assert metrics["ease_lambda_search"]["hr@10"] == {
        f"{lam:g}": round(hr, 4) for lam, hr in search.hr.items()
    }
    assert metrics["ease_lambda_search"]["users"] == 150


def test_a_fixed_default_is_recorded_without_a_search(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ease_module, "DEFAULT_LAMBDA", 300.0)
    assert lambda_metrics(shop_events(30), 5) == {"ease_lambda": 300.0}
