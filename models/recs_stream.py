"""Recs training from compact signals (issue 21 item 4): `persona models train recs` at scale.

`train_recs_file` trains the item-kNN recommender of `models.recs.train_recs` from an events
file read once into `models.compact.Signals` (no list of every event), and bounds each user's
part of the co-occurrence: only a user's CO_ITEMS most recent distinct items (by their newest
signal; ties by item id) enter the user x item matrix that both tables (the shrunk cosine's
`C = X'X` and EASE's Gram matrix) are built from. One user with 10,000 distinct items added
10^8 pairs to `C`; capped, a user adds at most CO_ITEMS^2 = 40,000. The serving side reads the
newest 200 items of a history too (models.recs.HISTORY_USED). Where no user exceeds the cap,
the model is the one `train_recs` trains from the same events, to the bit (same arrays, same
version digest: tests/models/test_recs_stream.py). Popularity counts every signal, uncapped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from engine.sources import ReadStats
from models.artifacts import make_version, rfc3339, utc_now
from models.compact import NO_ORDER, PURCHASE, Signals, read_signals
from models.compact_splits import leave_last_n
from models.ease_search import (
    AUTO_HOLDOUT,
    AUTO_MIN_USERS,
    AUTO_USERS,
    LAMBDAS,
    PINNED,
    TOO_FEW,
    Choice,
    best_of,
)  # fmt: skip
from models.ease_table import AUTO, TABLE_LAMBDA, Lambda, Table, assemble, ease_rows, parse_lambda
from models.peers import Interactions, ease_gram, ease_weights
from models.recs import (
    HISTORY_USED,
    POPULAR,
    TABLE,
    Recommender,
    cooccurrence_table,
    last_order_metrics,
)
from models.splits import sample

CO_ITEMS = 200  # a user's most recent distinct items that enter co-occurrence
NO_CUT = np.iinfo(np.int64).min  # a user without a purchase: nothing held out


@dataclass
class Matrix:
    """The user x item matrix of a training part: strongest signal per cell, each user's
    newest `cap` items, rows damped by 1/sqrt(the row's items); items sorted by id."""

    items: list[str]
    col: np.ndarray  # interned item -> column (-1: not in this part)
    x: sparse.csr_array  # users (by first appearance) x items, damped weights
    capped_users: int


def _first_appearance(user: np.ndarray) -> np.ndarray:
    """Row of each interned user, rows numbered by the user's first row in `user`."""
    uniq, first = np.unique(user, return_index=True)
    row = np.full(int(uniq.max()) + 1 if len(uniq) else 0, -1, dtype=np.int64)
    row[uniq[np.argsort(first)]] = np.arange(len(uniq))
    return row


def _columns(s: Signals, item: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The items present, sorted by id, and each interned item's column (-1: absent)."""
    present = np.unique(item)
    names = [s.items[i] for i in present.tolist()]
    order = sorted(range(len(names)), key=names.__getitem__)
    col = np.full(len(s.items), -1, dtype=np.int64)
    col[present[order]] = np.arange(len(order))
    return [names[j] for j in order], col


def _cells(r: np.ndarray, c: np.ndarray, w: np.ndarray, t: np.ndarray, n_cols: int) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray
]:  # fmt: skip
    """One cell per (row, column): the strongest weight and the newest time, sorted by cell."""
    key = r * n_cols + c
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else key
    cell = key[starts]
    w_max = np.maximum.reduceat(w[order], starts) if len(key) else w
    t_max = np.maximum.reduceat(t[order], starts) if len(key) else t
    return cell // n_cols, cell % n_cols, w_max, t_max


def _cap(rows: np.ndarray, cols: np.ndarray, ts: np.ndarray, cap: int) -> np.ndarray:
    """Mask of the cells kept: each row's `cap` newest (ties: lower column), all of a row that
    has no more than `cap`."""
    order = np.lexsort((cols, -ts, rows))
    starts = np.searchsorted(rows[order], rows[order], side="left")
    keep = np.zeros(len(rows), dtype=bool)
    keep[order] = np.arange(len(rows)) - starts < cap
    return keep


def user_item_matrix(s: Signals, ignore: Container[str], cap: int = CO_ITEMS) -> Matrix:
    """The damped, capped user x item matrix of the signals' rows (models.recs `_histories` and
    `neighbour_table`'s matrix, but each user's newest `cap` items only)."""
    rows_kept = ~s.ignored(ignore)
    user, item = s.user[rows_kept], s.item[rows_kept]
    if not len(user):
        raise ValueError("no item signals to train on")
    items, col = _columns(s, item)
    r, c, w, t = _cells(_first_appearance(user)[user], col[item], s.weights()[rows_kept],
                        s.ts[rows_kept], len(items))  # fmt: skip
    keep = _cap(r, c, t, cap)
    capped = len(np.unique(r[~keep]))
    r, c, w = r[keep], c[keep], w[keep]
    n_rows = int(r.max()) + 1
    counts = np.bincount(r, minlength=n_rows)
    values = w * (1.0 / np.sqrt(counts.astype(np.float64)))[r]
    indptr = np.r_[0, np.cumsum(counts)]
    index = np.int32 if len(c) < 2**31 else np.int64  # as the vectorizer's matrix had
    x = sparse.csr_array(
        (values, c.astype(index), indptr.astype(index)), shape=(n_rows, len(items))
    )
    return Matrix(items, col, x, capped)


def binary(m: Matrix) -> Interactions:
    """EASE's input: the matrix's cells as 1.0 (models.peers.interactions, items sorted)."""
    x = m.x
    ones = sparse.csr_matrix((np.ones(x.nnz, np.float32), x.indices, x.indptr), shape=x.shape)
    popularity = np.asarray(ones.sum(axis=0)).ravel()
    return Interactions(m.items, {item: i for i, item in enumerate(m.items)}, ones, popularity)


def popular_items(s: Signals, ignore: Container[str], m: Matrix) -> list[str]:
    """models.recs `_popularity`: items by distinct buyers, then signals, then id (uncapped)."""
    rows = ~s.ignored(ignore)
    cols = m.col[s.item[rows]]
    signals = np.bincount(cols, minlength=len(m.items))
    bought = rows & (s.kind == PURCHASE)
    pairs = np.unique(m.col[s.item[bought]] * (len(s.users) + 1) + s.user[bought])
    buyers = np.bincount(pairs // (len(s.users) + 1), minlength=len(m.items))
    ranked = np.lexsort((np.arange(len(m.items)), -signals, -buyers))[:POPULAR]
    return [m.items[i] for i in ranked.tolist()]


def fit_signals(
    s: Signals, k: int = 50, ignore: Container[str] = (), table: str = TABLE,
    cap: int = CO_ITEMS, lam: Lambda = AUTO,
) -> Recommender:  # fmt: skip
    """A recommender from signals, without evaluation: models.recs.fit_recommender's model
    (its EASE lambda searched for when `lam` is AUTO) when no user has more than `cap` items."""
    if table not in ("ease", "cosine"):
        raise ValueError(f"unknown neighbour table {table!r}: ease or cosine")
    lam = parse_lambda(lam)
    m = user_item_matrix(s, ignore, cap)
    fitted: Table = cooccurrence_table(m.x, m.items, k)
    metrics: dict[str, Any] = {}
    if table == "ease":
        choice = search_lambda(s, k, ignore, cap) if lam == AUTO else Choice(float(lam), how=PINNED)
        kept, b = ease_weights(binary(m), choice.lam)
        fitted = assemble(ease_rows(kept, b, k), fitted)
        metrics = choice.metrics()
    model = _recommender(fitted, popular_items(s, ignore, m), k)
    model.metrics = {**metrics, "co_items_cap": cap, "capped_users": m.capped_users}
    return model


def search_lambda(s: Signals, k: int, ignore: Container[str], cap: int = CO_ITEMS) -> Choice:
    """models.ease_search.choose_lambda on the signals: the same split (models/compact_splits),
    the same sampled users and grid, the tables built from the capped matrix."""
    began = time.monotonic()
    train, cases = leave_last_n(s, AUTO_HOLDOUT, ignore)
    cases = sample(cases, AUTO_USERS)
    if len(cases) < AUTO_MIN_USERS:
        return Choice(TABLE_LAMBDA, users=len(cases), seconds=time.monotonic() - began, how=TOO_FEW)
    cosine = fit_signals(train, k, ignore, table="cosine", cap=cap)
    gram = ease_gram(binary(user_item_matrix(train, ignore, cap)))
    return best_of(LAMBDAS, cosine, gram, k, cases, began)


def _recommender(fitted: Table, popular: list[str], k: int) -> Recommender:
    items, indptr, neighbours, weights = fitted
    when = utc_now()
    content = b"".join([indptr.tobytes(), neighbours.tobytes(), weights.tobytes()])
    content += json.dumps([items, popular]).encode()
    return Recommender(
        version=make_version("recs", when, content), created=rfc3339(when), items=items,
        indptr=indptr, neighbours=neighbours, weights=weights, popular=popular, k=k,
    )  # fmt: skip


# -- evaluation: each user's last order held out (models.recs._split_last_order) -------------

Case = tuple[list[tuple[str, int]], set[str], set[str]]  # history newest first, bought, new


def _last_orders(s: Signals) -> tuple[np.ndarray, np.ndarray]:
    """Per interned user: the time and order key of their last order (the file's last purchase
    at their newest purchase time), or NO_CUT and NO_ORDER without a purchase."""
    cut_ts = np.full(len(s.users), NO_CUT, dtype=np.int64)
    cut_order = np.full(len(s.users), NO_ORDER, dtype=np.int32)
    p = np.flatnonzero(s.kind == PURCHASE)
    order = p[np.lexsort((p, s.ts[p], s.user[p]))]
    last = order[np.r_[s.user[order][1:] != s.user[order][:-1], True]] if len(order) else order
    cut_ts[s.user[last]] = s.ts[last]
    cut_order[s.user[last]] = s.order[last]
    return cut_ts, cut_order


def split_last_order(s: Signals) -> tuple[Signals, dict[str, Case]]:
    """The training signals and, per evaluated user, (recent items newest first, items bought
    before, held-out items never bought before): models.recs._split_last_order's."""
    cut_ts, cut_order = _last_orders(s)
    has_cut = cut_ts[s.user] != NO_CUT
    held = has_cut & (s.kind == PURCHASE) & (s.ts == cut_ts[s.user])
    held &= s.order == cut_order[s.user]
    train = ~has_cut | (s.ts < cut_ts[s.user])
    return s.subset(train), _cases(s, held, train & has_cut)


def _cases(s: Signals, held: np.ndarray, before: np.ndarray) -> dict[str, Case]:
    targets: dict[int, set[str]] = {}
    for u, i in zip(s.user[held].tolist(), s.item[held].tolist(), strict=True):
        targets.setdefault(u, set()).add(s.items[i])
    recent: dict[int, dict[str, int]] = {u: {} for u in targets}
    bought: dict[int, set[str]] = {u: set() for u in targets}
    rows = before & np.isin(s.user, np.fromiter(targets, np.int64, len(targets)))
    columns = (a[rows].tolist() for a in (s.user, s.item, s.ts, s.kind))
    for u, i, t, kind in zip(*columns, strict=True):
        mine = recent[u]
        item = s.items[i]
        mine[item] = max(t, mine.get(item, 0))
        if kind == PURCHASE:
            bought[u].add(item)
    cases = {}
    for u, wanted in targets.items():
        new = wanted - bought[u]
        if recent[u] and new:
            history = sorted(recent[u].items(), key=lambda x: (-x[1], x[0]))[:HISTORY_USED]
            cases[s.users[u]] = (history, bought[u], new)
    return cases


def evaluate_signals(
    s: Signals, k: int = 50, ignore: Container[str] = (), at: int = 10, cap: int = CO_ITEMS,
    lam: Lambda = AUTO,
) -> dict[str, Any]:  # fmt: skip
    """models.recs.evaluate's HR@`at` against popularity, each user's last order held out."""
    train, cases = split_last_order(s)
    return last_order_metrics(fit_signals(train, k, ignore, cap=cap, lam=lam), cases, at)


def train_signals(
    s: Signals, k: int = 50, ignore: Container[str] = (), evaluate_split: bool = True,
    cap: int = CO_ITEMS, lam: Lambda = AUTO,
) -> Recommender:  # fmt: skip
    """models.recs.train_recs from signals: metrics from `evaluate_signals`, the model from all."""
    lam = parse_lambda(lam)
    metrics: dict[str, Any] = {}
    if evaluate_split:
        metrics.update(evaluate_signals(s, k, ignore, cap=cap, lam=lam))
        print(f"recs: {metrics}", file=sys.stderr)
    model = fit_signals(s, k, ignore, cap=cap, lam=lam)
    metrics.update({"n_items": len(model.items), "n_users": len(s.users), "k": k, "table": TABLE})
    model.metrics = {**metrics, **model.metrics}
    return model


def train_recs_file(
    path: str | Path, k: int = 50, ignore: Container[str] = (), lam: Lambda = AUTO,
    stats: ReadStats | None = None,
) -> Recommender:  # fmt: skip
    """The recs model of an events file, read in one streaming pass (`models.compact`)."""
    return train_signals(read_signals(path, stats), k, ignore, lam=lam)
