"""The churn training set from an events file in two streaming passes (issue 21 item 4).

`models.churn.churn_dataset` sorts a list of every event by time and folds each user's profile
up to the cut-off. `churn_dataset_file` reads the file twice instead and never holds its events:

1. a scan keeps, per event, the interned user, the time and whether it is a purchase (13 bytes);
   the cut-off, the labels, each user's last event before the cut-off and the users whose events
   before it are not in time order in the file follow from it;
2. a second read folds each event before the cut-off into its user's profile, in file order,
   turns a profile into its feature vector at the user's last such event and drops it. Only the
   events of users not in time order in the file are held, and folded sorted by time at the end.

A profile only sees its own user's events, so folding each user's events in time order (ties in
file order, as the stable sort had them) gives the profiles, features and labels of
`churn_dataset` (tests/models/test_churn_stream.py). Memory: the scan's arrays, one string per
user, the profiles of users between their first and last event before the cut-off (~3 KB each),
and the held events of unordered users.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.events import Event
from engine.features import DAY_MS, features, log_scale
from engine.profile import Profile, apply, is_reversal
from engine.sources import ReadStats, read_events
from models.churn import ChurnDataset, nobody_before


@dataclass
class Scan:
    users: list[str]
    user: np.ndarray  # int32 per event, file order
    ts: np.ndarray  # int64
    purchase: np.ndarray  # bool


def _events(path: str | Path, stats: ReadStats | None = None) -> Iterator[Event]:
    """The file's events as training reads them (cancellations left out)."""
    return (e for e in read_events(path, stats=stats, history=True) if not is_reversal(e))


def scan(path: str | Path, stats: ReadStats | None = None) -> Scan:
    """Pass 1: user, time and purchase flag of every event, in file order."""
    index: dict[str, int] = {}
    user, ts, bought = array("i"), array("q"), array("b")
    for e in _events(path, stats):
        user.append(index.setdefault(e.user_id, len(index)))
        ts.append(e.ts)
        bought.append(e.type == "purchase")
    return Scan(list(index), np.array(user, np.int32), np.array(ts, np.int64),
                np.array(bought, bool))  # fmt: skip


def _plan(s: Scan, before: np.ndarray) -> tuple[dict[int, int], set[int]]:
    """Each user's last event before the cut-off (position in the file), and the users whose
    events before it go back in time somewhere in the file."""
    rows = np.flatnonzero(before)
    rows = rows[np.argsort(s.user[rows], kind="stable")]
    users, times = s.user[rows], s.ts[rows]
    same = users[1:] == users[:-1]
    unordered = set(np.unique(users[1:][same & (times[1:] < times[:-1])]).tolist())
    ends = np.r_[~same, True] if len(rows) else np.zeros(0, bool)
    return dict(zip(users[ends].tolist(), rows[ends].tolist(), strict=True)), unordered


def _fold(path: str | Path, s: Scan, before: np.ndarray, cutoff_ms: int) -> dict[int, list[float]]:
    """Pass 2: user -> log-scaled features at the cut-off, for every user active before it."""
    last, unordered = _plan(s, before)
    users, flags = s.user.tolist(), before.tolist()
    out: dict[int, list[float]] = {}
    open_: dict[int, Profile] = {}
    held: dict[int, list[Event]] = {u: [] for u in unordered}
    n = -1
    for n, e in enumerate(_events(path)):
        if n >= len(users) or s.users[users[n]] != e.user_id:
            raise ValueError(f"{path} changed while training read it")
        if not flags[n]:
            continue
        u = users[n]
        if u in held:
            held[u].append(e)
            continue
        profile = apply(open_.pop(u, None), e)
        if n == last[u]:
            out[u] = log_scale(features(profile, cutoff_ms))
        else:
            open_[u] = profile
    if n + 1 != len(users):
        raise ValueError(f"{path} changed while training read it")
    for u, events in held.items():
        out[u] = log_scale(features(_folded(sorted(events, key=lambda e: e.ts)), cutoff_ms))
    return out


def _folded(events: list[Event]) -> Profile:
    profile: Profile | None = None
    for e in events:
        profile = apply(profile, e)
    assert profile is not None
    return profile


def churn_dataset_file(
    path: str | Path, horizon_days: int = 90, cutoff_ms: int | None = None,
    stats: ReadStats | None = None,
) -> ChurnDataset:  # fmt: skip
    """`models.churn.churn_dataset` of the file's events, read in two streaming passes."""
    s = scan(path, stats)
    if not len(s.ts):
        raise ValueError("no events to train on")
    horizon_ms = horizon_days * DAY_MS
    if cutoff_ms is None:
        cutoff_ms = int(s.ts.max()) - horizon_ms
    before = s.ts < cutoff_ms
    after = ~before & (s.ts < cutoff_ms + horizon_ms) & s.purchase
    buyers_after = set(np.unique(s.user[after]).tolist())
    vectors = _fold(path, s, before, cutoff_ms)
    if not vectors:
        raise ValueError(nobody_before(horizon_days, int(s.ts.max()) - int(s.ts.min())))
    order = sorted(vectors, key=s.users.__getitem__)
    x = np.array([vectors[u] for u in order], dtype=np.float64)
    y = np.array([0 if u in buyers_after else 1 for u in order], dtype=np.int64)
    return ChurnDataset([s.users[u] for u in order], x, y, cutoff_ms)
