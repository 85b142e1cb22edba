"""The EASE lambda searched for on the training data itself (issue 17 item 2)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.events import Event
from models.ease_search import (
    AUTO_HOLDOUT,
    AUTO_USERS,
    LAMBDAS,
    PINNED,
    SEARCHED,
    TOO_FEW,
    choose_lambda,
)
from models.ease_table import AUTO, TABLE_LAMBDA, ease_table, parse_lambda
from models.peers import Case
from models.recs import Recommender, fit_recommender, train_recs
from models.retrain import retrain_recs
from models.splits import held_history, leave_last_n, sample
from tests.models.synthetic import DAY, T0, basket_events, purchase


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
    choice = choose_lambda(
        events, 5, lambda part: fit_recommender(part, 5, table="cosine"), grid=grid
    )
    train, cases = leave_last_n(events, AUTO_HOLDOUT)
    cases = sample(cases, AUTO_USERS)
    expected = {lam: served_hit_rate(train, lam, cases) for lam in grid}
    assert len(set(expected.values())) > 1  # the data set tells the lambdas apart
    assert choice.hr == pytest.approx(expected)  # one Gram matrix for the grid: the same figures
    assert choice.lam == max(grid, key=lambda lam: expected[lam])
    assert choice.users == len(cases) == 150
    search = choice.metrics()["ease_lambda_search"]
    assert search["hr@10"] == {f"{lam:g}": round(hr, 4) for lam, hr in expected.items()}


def test_with_too_few_users_to_hold_out_the_fixed_lambda_stays() -> None:
    fit = lambda part: fit_recommender(part, 5, table="cosine")  # noqa: E731
    choice = choose_lambda(basket_events(), 5, fit)  # nobody has more than 5 distinct items
    assert (choice.lam, choice.hr, choice.users, choice.how) == (TABLE_LAMBDA, {}, 0, TOO_FEW)


def hub_events(users: int = 400, own: int = 8, seed: int = 5) -> list[Event]:
    """Ten staples nearly everyone buys first (95 %), then `own` of the 30 items of the user's
    group (of 5), ten days apart. With these counts a small lambda learns that a staple says nothing
    about which group item follows (the regression explains it away), while a large one ranks
    candidates by their co-counts with the staples (the whole history's weight): HR@10 on each
    user's last 5 items is about 0.89 at lambda 100, 0.80 at 300 and 0.41 at 1000."""
    rng = random.Random(seed)
    events: list[Event] = []
    for u in range(users):
        start = T0 + u * DAY
        events += [purchase(f"u{u}", f"h{h}", start) for h in range(10) if rng.random() < 0.95]
        for step, item in enumerate(rng.sample(range(30), own)):
            events.append(purchase(f"u{u}", f"g{u % 5}-{item}", start + (step + 1) * 10 * DAY))
    return events


def table_of(model: Recommender) -> tuple[list[str], list[int], list[float]]:
    return model.items, model.neighbours.tolist(), model.weights.tolist()


def ease_model(events: Sequence[Event], lam: float) -> Recommender:
    """The table trained with `lam` alone, for comparison."""
    cosine = fit_recommender(events, 5, table="cosine")
    fallback = (cosine.items, cosine.indptr, cosine.neighbours, cosine.weights)
    return Recommender("t", "", *ease_table(events, 5, (), fallback, lam=lam), cosine.popular, k=5)


def test_the_default_training_searches_the_lambda_and_records_it(tmp_path: Path) -> None:
    events = hub_events()
    model = train_recs(events, k=5, evaluate_split=False)  # what `persona models train recs` runs
    loaded = Recommender.load(model.save(tmp_path)).metrics  # what the artifact says
    assert loaded["ease_lambda_by"] == SEARCHED
    hr = loaded["ease_lambda_search"]["hr@10"]
    assert set(hr) == {f"{lam:g}" for lam in LAMBDAS}
    assert hr["100"] > max(hr["300"], hr["500"], hr["1000"]) + 0.05  # one lambda clearly wins
    assert loaded["ease_lambda_search"]["users"] == 400
    assert loaded["ease_lambda"] == 100.0
    assert table_of(model) == table_of(ease_model(events, 100.0))  # trained with what it chose
    assert table_of(model) != table_of(ease_model(events, 1000.0))


def test_a_pinned_lambda_is_honoured_without_a_search() -> None:
    events = hub_events()
    model = train_recs(events, k=5, evaluate_split=False, lam=1000)
    assert model.metrics["ease_lambda"] == 1000.0
    assert model.metrics["ease_lambda_by"] == PINNED
    assert "ease_lambda_search" not in model.metrics
    assert table_of(model) == table_of(ease_model(events, 1000.0))


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), "lots", True, None, 2e9])
def test_a_bad_lambda_is_refused_before_training(bad: object) -> None:
    with pytest.raises(ValueError, match="EASE lambda must be"):
        fit_recommender(basket_events(), 5, lam=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="EASE lambda must be"):
        parse_lambda(bad)


def test_lambdas_are_parsed_as_the_cli_gives_them() -> None:
    assert parse_lambda("auto") == AUTO
    assert parse_lambda("300") == parse_lambda(300) == 300.0
    assert parse_lambda("1e3") == 1000.0


def test_the_retraining_schedule_trains_with_the_searched_lambda() -> None:
    events = hub_events(own=13)  # the retraining holds out 5 of them, the search 5 more
    active = train_recs(events, k=5, evaluate_split=False, lam=1000)
    model = retrain_recs(events, active, now_ms=T0 + 400 * DAY)
    assert model.metrics["ease_lambda_by"] == SEARCHED  # on the retraining's own training part
    assert set(model.metrics["ease_lambda_search"]["hr@10"]) == {f"{lam:g}" for lam in LAMBDAS}
    assert model.metrics["retrain"]  # and evaluated against the active version, as before
