"""The held-out splits of the offline evaluation (models/evaluate.py), of the EASE lambda search
(models/ease_search.py) and of the retraining schedule (models/retrain.py): leave-last-N and the
time split, a seeded sample of the cases, and a case's history as a profile holds it. Kept apart
from the evaluation so the default recommender's training (models/recs.py, which searches its
lambda on a leave-last-N split) can use them without importing the evaluation, which imports it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Container, Iterable, Sequence

from engine.events import Event
from engine.features import DAY_MS
from engine.profile import HISTORY_ITEMS, MINUTE_MS
from models.peers import Case
from models.signals import SIGNAL_WEIGHTS

HISTORY = HISTORY_ITEMS  # what a profile holds (engine.profile's long history)
HOLDOUT = 5


# -- recommendations: splits -----------------------------------------------------------------


def signals(events: Iterable[Event], ignore: Container[str]) -> Iterable[Event]:
    return (e for e in events if e.type in SIGNAL_WEIGHTS and e.item_id and e.item_id not in ignore)


def _histories(events: Iterable[Event], ignore: Container[str]) -> dict[str, dict[str, int]]:
    """user -> item -> newest time of an item signal."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for e in signals(events, ignore):
        items = out[e.user_id]
        items[str(e.item_id)] = max(e.ts, items.get(str(e.item_id), e.ts))
    return out


def _case(user: str, history: dict[str, int], targets: Iterable[str]) -> Case:
    newest_first = sorted(history.items(), key=lambda x: (-x[1], x[0]))
    return Case(user, tuple(newest_first), frozenset(targets) - history.keys())


def leave_last_n(
    events: Sequence[Event], n: int = HOLDOUT, ignore: Container[str] = ()
) -> tuple[list[Event], list[Case]]:
    """(training events, cases): each user's last `n` distinct items held out (see the module)."""
    first: dict[str, dict[str, int]] = defaultdict(dict)
    for e in signals(events, ignore):
        items = first[e.user_id]
        items[str(e.item_id)] = min(e.ts, items.get(str(e.item_id), e.ts))
    cut: dict[str, int] = {}
    for user, items in first.items():
        if len(items) > n:
            cut[user] = sorted(items.values())[-n]
    train = [e for e in events if e.ts < cut.get(e.user_id, e.ts + 1)]
    before = _histories((e for e in train if e.user_id in cut), ignore)
    cases = [
        _case(user, before[user], (i for i, ts in first[user].items() if ts >= cut[user]))
        for user in sorted(cut)
        if before.get(user)
    ]
    return train, [c for c in cases if c.targets]


def time_split(
    events: Sequence[Event], test_days: int = 30, ignore: Container[str] = ()
) -> tuple[list[Event], list[Case]]:
    """(training events, cases): the last `test_days` held out; targets are purchases."""
    t = max(e.ts for e in events) - test_days * DAY_MS
    train = [e for e in events if e.ts < t]
    before = _histories(train, ignore)
    targets: dict[str, set[str]] = defaultdict(set)
    for e in signals(events, ignore):
        if e.ts >= t and e.type == "purchase" and e.user_id in before:
            targets[e.user_id].add(str(e.item_id))
    cases = [_case(u, before[u], items) for u, items in sorted(targets.items())]
    return train, [c for c in cases if c.targets]


def sample(cases: list[Case], max_users: int | None) -> list[Case]:
    """At most `max_users` cases, the same ones on every run (by a digest of the user id)."""
    if max_users is None or len(cases) <= max_users:
        return cases
    key = lambda c: hashlib.blake2b(c.user.encode(), digest_size=8).digest()  # noqa: E731
    return sorted(sorted(cases, key=key)[:max_users], key=lambda c: c.user)


def held_history(case: Case) -> list[tuple[str, int]]:
    """A case's history as a profile holds it (engine.profile.history_newest): the newest
    HISTORY items, times to the minute, newest first, ties by item id."""
    held = [(item, ts // MINUTE_MS * MINUTE_MS) for item, ts in case.history[:HISTORY]]
    return sorted(held, key=lambda x: (-x[1], x[0]))
