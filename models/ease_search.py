"""The EASE lambda searched for on the training data itself (issue 17 item 2), as gorse's model
search does: `choose_lambda` holds out each training user's last AUTO_HOLDOUT distinct items of
the training data (the evaluation's leave-last-N, one level down), trains the neighbour table of
each lambda of LAMBDAS on the rest (one Gram matrix for the whole grid), scores each as the engine
serves it (HR@10 on AUTO_USERS seeded users) and picks the best.

Measured on the validation splits (docs/evaluation-validation.md, its `ease auto` row): it is
never below the best peer on any of them, where no fixed lambda is. It is what
`models.recs.fit_recommender` trains with by default (lambda AUTO); a pinned lambda skips it.
recs imports this module, so this one takes the cosine fit it needs from its caller (`fit_cosine`)
and never imports recs or the evaluation (which imports recs): no import cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.events import Event
from models.ease_table import TABLE_LAMBDA, Table, assemble, ease_rows, sorted_interactions
from models.peers import AT, EASE_MAX_ITEMS, Case, ease_gram, ease_solve
from models.splits import held_history, leave_last_n, sample

if TYPE_CHECKING:
    from models.recs import Recommender

LAMBDAS = (100.0, 300.0, 500.0, 1000.0)  # the grid searched; ties go to the first
AUTO_HOLDOUT = 5  # each user's last distinct items held out, as the evaluation holds them out
AUTO_USERS = 1000  # held-out users scored per lambda (the same seeded sample for each)
AUTO_MIN_USERS = 50  # with fewer, no choice (TABLE_LAMBDA): too few to tell lambdas apart
SEARCHED, PINNED, TOO_FEW = "searched", "pinned", "too few users to search"


# -- the data-adaptive lambda (issue 17 item 2) ----------------------------------------------


@dataclass(frozen=True)
class Choice:
    """The lambda picked on the internal split and what each candidate scored there."""

    lam: float
    hr: dict[float, float] = field(default_factory=dict)  # lambda -> HR@10 on the split
    users: int = 0
    seconds: float = 0.0
    how: str = SEARCHED  # SEARCHED, PINNED (by the user) or TOO_FEW

    def metrics(self) -> dict[str, Any]:
        """The choice as the model's metrics record it (`persona models list --json`)."""
        if self.how == PINNED:
            return {"ease_lambda": self.lam, "ease_lambda_by": PINNED}
        return {
            "ease_lambda": self.lam,
            "ease_lambda_by": self.how,
            "ease_lambda_search": {
                f"hr@{AT}": {f"{lam:g}": round(hr, 4) for lam, hr in self.hr.items()},
                "users": self.users,
                "seconds": round(self.seconds, 1),
                "split": f"each training user's last {AUTO_HOLDOUT} distinct items held out",
            },
        }


def choose_lambda(
    events: Sequence[Event],
    k: int,
    fit_cosine: Callable[[Sequence[Event]], Recommender],
    ignore: Container[str] = (),
    max_items: int = EASE_MAX_ITEMS,
    grid: Sequence[float] = LAMBDAS,
) -> Choice:
    """The lambda of `grid` whose table, served as the engine serves it, has the best HR@10 when
    each user's last AUTO_HOLDOUT distinct items of `events` are held out (ties: the first);
    the Gram matrix is built once for the whole grid. `fit_cosine(events)`: the recommender of
    the cosine table (`models.recs.fit_recommender(..., table="cosine")`, with the same k and
    ignore), whose rows EASE does not cover and whose serving settings each table is scored
    with. TABLE_LAMBDA, unsearched, when fewer than AUTO_MIN_USERS users can be held out."""
    began = time.monotonic()
    train, cases = leave_last_n(events, AUTO_HOLDOUT, ignore)
    cases = sample(cases, AUTO_USERS)
    if len(cases) < AUTO_MIN_USERS:
        return Choice(TABLE_LAMBDA, users=len(cases), seconds=time.monotonic() - began, how=TOO_FEW)
    cosine = fit_cosine(train)
    kept, gram = ease_gram(sorted_interactions(train, ignore), max_items)
    return best_of(grid, cosine, (kept, gram), k, cases, began)


def best_of(
    grid: Sequence[float],
    cosine: Recommender,
    gram: tuple[np.ndarray, np.ndarray],
    k: int,
    cases: Sequence[Case],
    began: float,
) -> Choice:
    """The lambda of `grid` with the best `hit_rate` on `cases` (ties: the first), from the
    training part's cosine recommender and (kept items, Gram matrix); models/recs_stream.py
    searches from a file's compact signals with it."""
    fallback = (list(cosine.items), cosine.indptr, cosine.neighbours, cosine.weights)
    hr = {}
    for lam in grid:
        table = assemble(ease_rows(gram[0], ease_solve(gram[1], lam), k), fallback)
        hr[lam] = hit_rate(cosine, table, cases)
    best = max(grid, key=lambda lam: hr[lam])
    return Choice(best, hr, len(cases), time.monotonic() - began)


def hit_rate(cosine: Recommender, table: Table, cases: Sequence[Case]) -> float:
    """HR@10 of the neighbour table served as `cosine` is (its popular items and settings), from
    each case's history as a profile holds it, every item of the history excluded."""
    items, indptr, neighbours, weights = table
    if items != cosine.items:
        raise ValueError("the table is not over the cosine recommender's items")
    model = replace(cosine, indptr=indptr, neighbours=neighbours, weights=weights)
    hits = sum(
        bool(set(model.recommend(held_history(c), {i for i, _ in c.history}, AT)) & c.targets)
        for c in cases
    )
    return hits / len(cases)
