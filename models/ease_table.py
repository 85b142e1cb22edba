"""EASE weights served as a neighbour table: how the default recommender is trained (issue 17).

EASE (models/peers.py) learns an item x item matrix B from the binary user x item matrix; here
each item keeps its K largest positive weights as its neighbours, so the engine serves it exactly
as it served the cosine table (`models.recs.Recommender`: the same artifact, the same cost per
request). Items beyond the EASE_MAX_ITEMS most popular keep their rows of the shrunk-cosine table.

The lambda is searched for at training time by default (models/ease_search.py: AUTO, the value of
its grid best on the training data's own leave-last-5 split); TABLE_LAMBDA is its fallback with
too few users to hold out, or what the user pins. The other settings were chosen on validation
splits only (each data set's leave-last-5 training part, its own last 5 items held out again;
docs/evaluation-validation.md, `python -m benchmarks.tune_recs`): 50 neighbours, the recency decay
0.7 with a floor of 0.02 over the newest 200 items of the long history; the searched lambda was
the only setting never below the best peer on any of the validation data sets (a fixed 100 came
nearest: 0.97x of the EASE peer on UCI). 100 or 200 neighbours gained at most 0.003 of mean
HR@10 (0.98x at best) for 2-4x the artifact and 2-3x the time per request.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from typing import Literal

import numpy as np

from engine.events import Event
from models.peers import EASE_MAX_ITEMS, Interactions, ease_weights, interactions

TABLE_LAMBDA = 100.0  # the peer EASE keeps the 500
AUTO: Literal["auto"] = "auto"  # the lambda searched for on the training data (the default)
Lambda = float | Literal["auto"]
MAX_LAMBDA = 1e9
Table = tuple[list[str], np.ndarray, np.ndarray, np.ndarray]  # items, indptr, neighbours, weights


def parse_lambda(value: object) -> Lambda:
    """AUTO or a pinned lambda: a finite number in (0, MAX_LAMBDA]; ValueError saying what is
    wrong otherwise (a CLI flag, a setting)."""
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"the EASE lambda must be 'auto' or a number, not {value!r}")
    try:
        lam = float(value)
    except ValueError:
        raise ValueError(f"the EASE lambda must be 'auto' or a number, not {value!r}") from None
    if not math.isfinite(lam) or not 0 < lam <= MAX_LAMBDA:
        raise ValueError(f"the EASE lambda must be above 0 and at most {MAX_LAMBDA:g}, not {value}")
    return lam


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
    lam: float = TABLE_LAMBDA,
    max_items: int = EASE_MAX_ITEMS,
) -> Table:
    """The neighbour table of EASE's weights; rows EASE does not cover come from `fallback`
    (the cosine table of the same events: the same items, in the same sorted order)."""
    data = sorted_interactions(events, ignore)
    if fallback[0] != data.items:
        raise ValueError("the fallback table is not over the same items")
    kept, b = ease_weights(data, lam, max_items)
    return assemble(ease_rows(kept, b, k), fallback)
