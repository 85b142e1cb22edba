"""models.splits.leave_last_n over compact signals (models/compact.py): the split the EASE lambda
search holds out (models/ease_search.py), for training from a file (models/recs_stream.py)."""

from __future__ import annotations

from collections.abc import Container

import numpy as np

from models.compact import Signals
from models.peers import Case


def _grouped(
    user: np.ndarray, item: np.ndarray, ts: np.ndarray, newest: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, the newest or first time) per distinct (user, item), sorted by user, item."""
    key = user.astype(np.int64) << 32 | item.astype(np.int64)
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else key
    times = (np.maximum if newest else np.minimum).reduceat(ts[order], starts) if len(key) else ts
    return key[starts] >> 32, key[starts] & 0xFFFFFFFF, times


def _cuts(user: np.ndarray, first: np.ndarray, n: int, users: int) -> np.ndarray:
    """Per interned user the time from which their last `n` distinct items count as held out
    (the n-th newest first time), or int64's largest when they have n items or fewer."""
    order = np.lexsort((first, user))
    user, first = user[order], first[order]
    ends = np.flatnonzero(np.r_[user[1:] != user[:-1], True]) if len(user) else user
    counts = np.diff(np.r_[-1, ends])
    cut = np.zeros(users, dtype=np.int64)
    has = np.zeros(users, dtype=bool)
    many = counts > n
    cut[user[ends[many]]] = first[ends[many] - n + 1]
    has[user[ends[many]]] = True
    return np.where(has, cut, np.iinfo(np.int64).max)


def leave_last_n(s: Signals, n: int, ignore: Container[str] = ()) -> tuple[Signals, list[Case]]:
    """(training signals, cases): models.splits.leave_last_n of the same events."""
    q = ~s.ignored(ignore)
    fu, fi, first = _grouped(s.user[q], s.item[q], s.ts[q], newest=False)
    cut = _cuts(fu, first, n, len(s.users))
    train = s.ts < cut[s.user]
    has = cut < np.iinfo(np.int64).max
    rows = train & q & has[s.user]
    bu, bi, newest = _grouped(s.user[rows], s.item[rows], s.ts[rows], newest=True)
    history: dict[int, list[tuple[str, int]]] = {}
    for u, i, t in zip(bu.tolist(), bi.tolist(), newest.tolist(), strict=True):
        history.setdefault(u, []).append((s.items[i], t))
    targets: dict[int, set[str]] = {}
    held = has[fu] & (first >= cut[fu])
    for u, i in zip(fu[held].tolist(), fi[held].tolist(), strict=True):
        targets.setdefault(u, set()).add(s.items[i])
    cases = []
    for u in sorted(history, key=s.users.__getitem__):
        newest_first = tuple(sorted(history[u], key=lambda x: (-x[1], x[0])))
        wanted = frozenset(targets.get(u, ())) - {i for i, _t in newest_first}
        if wanted:
            cases.append(Case(s.users[u], newest_first, wanted))
    return s.subset(train), cases
