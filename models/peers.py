"""The simple peers Persona's recommender is measured against (issue 17), on the same cases.

Each peer is fitted on the training interactions (a binary user x item matrix: a user interacted
with an item, any signal) and ranks a batch of cases at once. Like the issue's table, every peer
excludes every item the case's user interacted with before the cut; ties and items without a
score go by popularity, so each list is full.

- `popularity`: items by distinct users.
- `item_knn`: plain cosine item-kNN, `C[i, j] / sqrt(C[i, i] C[j, j])` with `C = X'X`, uniform
  weights over the user's whole history, or over their `last` most recent items.
- `ease`: EASE (Steck 2019), the closed-form item-item ridge regression
  `B = I - P / diag(P)` with `P = (X'X + lambda I)^-1`, over the `EASE_MAX_ITEMS` most popular
  items only (a dense item x item inverse: 10,000 items take 400 MB in float32).
- `implicit_als` (models.evaluate): only where the optional `implicit` package is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.linalg import lapack

from engine.events import Event
from models.signals import SIGNAL_WEIGHTS

AT = 10
EASE_LAMBDA = 500.0
EASE_MAX_ITEMS = 10_000
BATCH = 256  # cases scored per dense block (BATCH x items floats)


@dataclass(frozen=True)
class Case:
    """One test user: what they had before the cut (distinct items, newest first) and what they
    went on to interact with that was new to them."""

    user: str
    history: tuple[tuple[str, int], ...]
    targets: frozenset[str]


Ranker = Callable[[Sequence[Case]], list[list[str]]]


@dataclass
class Interactions:
    items: list[str]
    index: dict[str, int]
    matrix: sparse.csr_matrix  # users x items, 1.0 where the user interacted with the item
    popularity: np.ndarray  # distinct users per item

    def history_matrix(self, cases: Sequence[Case], last: int | None = None) -> sparse.csr_matrix:
        """cases x items, 1.0 for each known item of a case's history (its `last` newest)."""
        rows: list[int] = []
        cols: list[int] = []
        for r, case in enumerate(cases):
            for item, _ts in case.history[:last]:
                j = self.index.get(item)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
        data = np.ones(len(rows), dtype=np.float32)
        return sparse.csr_matrix((data, (rows, cols)), shape=(len(cases), len(self.items)))


def interactions(train: Iterable[Event], ignore: Container[str] = ()) -> Interactions:
    """The binary user x item matrix of the training events' item signals."""
    users: dict[str, int] = {}
    index: dict[str, int] = {}
    cells: set[tuple[int, int]] = set()
    for e in train:
        if e.type in SIGNAL_WEIGHTS and e.item_id and e.item_id not in ignore:
            u = users.setdefault(e.user_id, len(users))
            cells.add((u, index.setdefault(e.item_id, len(index))))
    rows = np.fromiter((u for u, _ in cells), np.int64, len(cells))
    cols = np.fromiter((i for _, i in cells), np.int64, len(cells))
    matrix = sparse.csr_matrix(
        (np.ones(len(cells), np.float32), (rows, cols)), shape=(len(users), len(index))
    )
    popularity = np.asarray(matrix.sum(axis=0)).ravel()
    return Interactions(list(index), index, matrix, popularity)


def top_items(scores: np.ndarray, cases: Sequence[Case], data: Interactions) -> list[list[str]]:
    """The AT best of each row of `scores` (cases x items), never an item of the case's
    history; ties and unscored items by popularity."""
    tiebreak = data.popularity / (data.popularity.max(initial=0.0) + 1.0) * 1e-6
    out: list[list[str]] = []
    for row, case in zip(scores, cases, strict=True):
        row = row.astype(np.float64) + tiebreak
        for item, _ts in case.history:
            j = data.index.get(item)
            if j is not None:
                row[j] = -np.inf
        k = min(AT, len(row))
        best = np.argpartition(-row, k - 1)[:k] if k else np.zeros(0, np.int64)
        best = best[np.lexsort((best, -row[best]))]
        out.append([data.items[j] for j in best if np.isfinite(row[j])])
    return out


def _batched(score: Callable[[Sequence[Case]], np.ndarray], data: Interactions) -> Ranker:
    def rank(cases: Sequence[Case]) -> list[list[str]]:
        out: list[list[str]] = []
        for start in range(0, len(cases), BATCH):
            part = cases[start : start + BATCH]
            out += top_items(score(part), part, data)
        return out

    return rank


def popularity_ranker(data: Interactions) -> Ranker:
    return _batched(lambda cases: np.zeros((len(cases), len(data.items))), data)


def cosine(data: Interactions) -> sparse.csr_matrix:
    """Item x item cosine similarity of the binary matrix, zero diagonal."""
    co = (data.matrix.T @ data.matrix).tocsr().astype(np.float64)
    norm = np.sqrt(co.diagonal())
    inv = sparse.diags(np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0))
    sims = (inv @ co @ inv).tocsr()
    sims.setdiag(0.0)
    sims.eliminate_zeros()
    return sims


def knn_ranker(data: Interactions, last: int | None = None) -> Ranker:
    sims = cosine(data)

    def score(cases: Sequence[Case]) -> np.ndarray:
        return np.asarray((data.history_matrix(cases, last) @ sims).toarray())

    return _batched(score, data)


def spd_inverse(a: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix through its Cholesky factor (half the
    work of a general inverse); float32 stays float32."""
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (a,))
    factor, info = potrf(a, lower=False, overwrite_a=True)
    if info == 0:
        inverse, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"not positive definite (LAPACK info {info})")
    upper = np.triu(inverse)
    full: np.ndarray = upper + np.triu(upper, 1).T
    return full


def ease_gram(data: Interactions, max_items: int = EASE_MAX_ITEMS) -> tuple[np.ndarray, np.ndarray]:
    """(the kept item indices: the `max_items` most popular, the Gram matrix X'X among them):
    what EASE's weights for every lambda share."""
    kept = np.sort(np.argsort(-data.popularity, kind="stable")[:max_items])
    x = data.matrix[:, kept]
    return kept, np.asarray((x.T @ x).toarray(), dtype=np.float32)


def ease_solve(gram: np.ndarray, lam: float, keep_gram: bool = True) -> np.ndarray:
    """EASE's weights B for one lambda from the Gram matrix, left as it was when `keep_gram`
    (else overwritten: one dense item x item matrix less in memory)."""
    regularized = gram.copy() if keep_gram else gram
    regularized[np.diag_indices_from(regularized)] += lam
    p = spd_inverse(regularized)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    return b


def ease_weights(
    data: Interactions, lam: float = EASE_LAMBDA, max_items: int = EASE_MAX_ITEMS
) -> tuple[np.ndarray, np.ndarray]:
    """(the kept item indices, the EASE weights B among them)."""
    kept, gram = ease_gram(data, max_items)
    return kept, ease_solve(gram, lam, keep_gram=False)


def ease_ranker(
    data: Interactions,
    lam: float = EASE_LAMBDA,
    max_items: int = EASE_MAX_ITEMS,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> Ranker:
    """EASE's ranking; `weights`: `ease_weights(data, ...)` computed already."""
    kept, b = weights if weights is not None else ease_weights(data, lam, max_items)

    def score(cases: Sequence[Case]) -> np.ndarray:
        history = data.history_matrix(cases)[:, kept]
        scores = np.full((len(cases), len(data.items)), -1e9)  # items beyond the cap: last
        scores[:, kept] = np.asarray(history @ b)
        return scores

    return _batched(score, data)
