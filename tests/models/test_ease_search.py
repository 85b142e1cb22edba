"""The EASE lambda searched for on the training data itself (issue 17 item 2)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from engine.events import Event
from models.ease_search import AUTO_HOLDOUT, AUTO_USERS, choose_lambda
from models.ease_table import TABLE_LAMBDA, ease_table
from models.evaluate import held_history, leave_last_n, sample
from models.peers import Case
from models.recs import Recommender, fit_recommender
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
    choice = choose_lambda(events, 5, grid=grid)
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
    choice = choose_lambda(basket_events(), 5)  # nobody has more than 5 distinct items
    assert (choice.lam, choice.hr, choice.users) == (TABLE_LAMBDA, {}, 0)
