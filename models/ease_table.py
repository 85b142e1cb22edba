"""EASE weights served as a neighbour table: how the default recommender is trained (issue 17).

EASE (models/peers.py) learns an item x item matrix B from the binary user x item matrix; here
each item keeps its K largest positive weights as its neighbours, so the engine serves it exactly
as it served the cosine table (`models.recs.Recommender`: the same artifact, the same cost per
request). Items beyond the EASE_MAX_ITEMS most popular keep their rows of the shrunk-cosine table.

Chosen on validation splits only (each data set's leave-last-5 training part, its own last 5
items held out again; docs/evaluation-validation.md, `python -m benchmarks.tune_recs`): 50
neighbours, the recency decay 0.7 with a floor of 0.02 over the newest 200 items of the long
history. No fixed lambda was at least the best peer on every data set (100: 0.98x of the EASE
peer on UCI; 500 lost on the REES46 head, 0.95x), so lambda is chosen per training set (AUTO,
issue 17 item 2, as gorse's model search does): `choose_lambda` holds out each training user's
last AUTO_HOLDOUT distinct items of the training data, scores the table of each lambda of
LAMBDAS there as served, and the table is trained on all of the data with the best; with fewer
than AUTO_MIN_USERS held-out users it keeps TABLE_LAMBDA. 100 or 200 neighbours gained at most
0.003 of mean HR@10 for 2-4x the artifact and 2-3x the time per request.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engine.events import Event
from models.peers import (
    AT,
    EASE_MAX_ITEMS,
    Interactions,
    ease_gram,
    ease_solve,
    ease_weights,
    interactions,
)
from models.signals import SIGNAL_WEIGHTS

TABLE_LAMBDA = 100.0  # the peer EASE keeps the 500
AUTO: Literal["auto"] = "auto"  # lambda chosen per training set (`choose_lambda`)
Lambda = float | Literal["auto"]
LAMBDAS = (100.0, 300.0, 500.0, 1000.0)  # the grid `AUTO` picks from; ties go to the first
AUTO_HOLDOUT = 5  # each user's last distinct items held out, as the evaluation holds them out
AUTO_USERS = 1000  # held-out users scored per lambda (the same seeded sample for each)
AUTO_MIN_USERS = 50  # with fewer, no choice: TABLE_LAMBDA
CHOICES_KEPT = 4  # choices remembered, so that the metrics do not pay for a second search
DEFAULT_LAMBDA: Lambda = AUTO  # what `fit_recommender`'s table is trained with
Table = tuple[list[str], np.ndarray, np.ndarray, np.ndarray]  # items, indptr, neighbours, weights


def sorted_interactions(events: Sequence[Event], ignore: Container[str]) -> Interactions:
    """The binary matrix with its items in sorted order (the neighbour table's order)."""
    data = interactions(events, ignore)
    order = np.argsort(np.array(data.items, dtype=object), kind="stable")
    items = [data.items[i] for i in order]
    return Interactions(
        items, {item: i for i, item in enumerate(items)}, data.matrix[:, order].tocsr(),
        data.popularity[order],
    )  # fmt: skip


def top_positive(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest positive entries of `row`, best first, ties by index."""
    candidates = np.flatnonzero(row > 0)
    if len(candidates) > k:
        candidates = candidates[np.argpartition(-row[candidates], k - 1)[:k]]
    return candidates[np.lexsort((candidates, -row[candidates]))]


def ease_rows(kept: np.ndarray, b: np.ndarray, k: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """item index -> (neighbour indices, weights) for the items EASE covers (`ease_weights`)."""
    rows = {}
    for r, item in enumerate(kept.tolist()):
        top = top_positive(b[r], k)
        rows[item] = (kept[top].astype(np.int32), b[r, top].astype(np.float32))
    return rows


def assemble(rows: dict[int, tuple[np.ndarray, np.ndarray]], fallback: Table) -> Table:
    """The table of `rows`, and of `fallback`'s rows for the items `rows` lacks."""
    items, old_indptr, old_neighbours, old_weights = fallback
    indptr = [0]
    neighbours: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for i in range(len(items)):
        start, end = int(old_indptr[i]), int(old_indptr[i + 1])
        nbrs, wts = rows.get(i, (old_neighbours[start:end], old_weights[start:end]))
        neighbours.append(nbrs)
        weights.append(wts)
        indptr.append(indptr[-1] + len(nbrs))
    return (
        items,
        np.array(indptr, dtype=np.int64),
        np.concatenate(neighbours).astype(np.int32) if neighbours else np.zeros(0, np.int32),
        np.concatenate(weights).astype(np.float32) if weights else np.zeros(0, np.float32),
    )


def ease_table(
    events: Sequence[Event],
    k: int,
    ignore: Container[str],
    fallback: Table,
    lam: Lambda | None = None,
    max_items: int = EASE_MAX_ITEMS,
) -> Table:
    """The neighbour table of EASE's weights; rows EASE does not cover come from `fallback`
    (the cosine table of the same events: the same items, in the same sorted order). `lam`
    AUTO: the lambda of LAMBDAS best on an internal split of `events` (`choose_lambda`); None:
    DEFAULT_LAMBDA."""
    lam = DEFAULT_LAMBDA if lam is None else lam
    if lam == AUTO:
        lam = chosen(events, k, ignore, max_items).lam
    data = sorted_interactions(events, ignore)
    if fallback[0] != data.items:
        raise ValueError("the fallback table is not over the same items")
    kept, b = ease_weights(data, float(lam), max_items)
    return assemble(ease_rows(kept, b, k), fallback)


# -- the data-adaptive lambda (issue 17 item 2) ----------------------------------------------


@dataclass(frozen=True)
class Choice:
    """The lambda picked on the internal split and what each candidate scored there."""

    lam: float
    hr: dict[float, float] = field(default_factory=dict)  # lambda -> HR@10 on the split
    users: int = 0
    seconds: float = 0.0

    def metrics(self) -> dict[str, Any]:
        """The choice as the model's metrics record it."""
        return {
            "ease_lambda": self.lam,
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
    ignore: Container[str] = (),
    max_items: int = EASE_MAX_ITEMS,
    grid: Sequence[float] = LAMBDAS,
) -> Choice:
    """The lambda of `grid` whose table, served as the engine serves it, has the best HR@10 when
    each user's last AUTO_HOLDOUT distinct items of `events` are held out (ties: the first);
    the Gram matrix is built once for the whole grid. TABLE_LAMBDA when fewer than
    AUTO_MIN_USERS users can be held out."""
    # Imported here: both modules import this one (the neighbour table is trained here).
    from models.evaluate import leave_last_n, sample
    from models.recs import fit_recommender

    began = time.monotonic()
    train, cases = leave_last_n(events, AUTO_HOLDOUT, ignore)
    cases = sample(cases, AUTO_USERS)
    if len(cases) < AUTO_MIN_USERS:
        return Choice(TABLE_LAMBDA, users=len(cases), seconds=time.monotonic() - began)
    cosine = fit_recommender(train, k, ignore, table="cosine")
    fallback = (cosine.items, cosine.indptr, cosine.neighbours, cosine.weights)
    kept, gram = ease_gram(sorted_interactions(train, ignore), max_items)
    hr = {}
    for lam in grid:
        table = assemble(ease_rows(kept, ease_solve(gram, lam), k), fallback)
        hr[lam] = hit_rate(table, cosine.popular, k, cases)
    best = max(grid, key=lambda lam: hr[lam])
    return Choice(best, hr, len(cases), time.monotonic() - began)


def hit_rate(table: Table, popular: list[str], k: int, cases: Sequence[Any]) -> float:
    """HR@10 of the neighbour table served with the default settings, from each case's
    history as a profile holds it, every item of the history excluded."""
    from models.evaluate import held_history
    from models.recs import Recommender

    model = Recommender("auto", "", *table, popular=popular, k=k)
    hits = sum(
        bool(set(model.recommend(held_history(c), {i for i, _ in c.history}, AT)) & c.targets)
        for c in cases
    )
    return hits / len(cases)


def lambda_metrics(events: Sequence[Event], k: int, ignore: Container[str] = ()) -> dict[str, Any]:
    """The EASE lambda `fit_recommender(events, k, ignore)` trains its table with and, when it is
    searched for (AUTO), the search's figures (remembered from the training: not searched again)."""
    if DEFAULT_LAMBDA != AUTO:
        return {"ease_lambda": DEFAULT_LAMBDA}
    return chosen(events, k, ignore).metrics()


_CHOICES: dict[bytes, Choice] = {}


def events_digest(events: Sequence[Event], ignore: Container[str], *settings: object) -> bytes:
    """A digest of what `choose_lambda` reads of `events` (their item signals) and `settings`."""
    digest = hashlib.blake2b(repr(settings).encode(), digest_size=16)
    for e in events:
        if e.type in SIGNAL_WEIGHTS and e.item_id and e.item_id not in ignore:
            digest.update(f"{e.user_id}\0{e.item_id}\0{e.ts}\0{e.type}\n".encode())
    return digest.digest()


def chosen(
    events: Sequence[Event], k: int, ignore: Container[str] = (), max_items: int = EASE_MAX_ITEMS
) -> Choice:
    """`choose_lambda`, remembered for the last CHOICES_KEPT event sets: training asks for the
    table and then for the metrics of the same choice."""
    key = events_digest(events, ignore, k, max_items, LAMBDAS)
    if key not in _CHOICES:
        if len(_CHOICES) >= CHOICES_KEPT:
            del _CHOICES[next(iter(_CHOICES))]
        _CHOICES[key] = choose_lambda(events, k, ignore, max_items, LAMBDAS)
    return _CHOICES[key]
