"""Scheduled retraining (issue 17 item 5): when a run is due, what it trains on and holds out,
how the new version and the active one are compared, and whether the new one is promoted.

Pure: no I/O and no wall clock (times are passed in; the schedule takes `engine.clock` times).
The worker's side (persona/retrain.py) reads the events, runs `retrain_all` in a child process
and publishes what it returns.

- Recommendations: each user's last `HOLDOUT_ITEMS` distinct items are held out
  (`models.evaluate.leave_last_n`); the new version is trained on the rest and both it and the
  active version rank 10 items for every held-out user from what the user had before, every item
  of that history excluded. The metric that decides is HR@10.
- Churn: the new version is fitted with labels from [newest - 2 horizons, newest - horizon) and
  both it and the active version are scored on the users active before newest - horizon, with
  labels from [newest - horizon, newest]: labels never overlap. The metric that decides is ROC AUC.

The published version is the one evaluated (trained without the held-out window), so its metrics
describe exactly the artifact that may be promoted. The active version may have been trained on
events of the window (a `persona models train` on everything): that favours it, never the new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from engine.erasure import produced_ms
from engine.events import Event
from engine.features import DAY_MS
from engine.sources import UCI_NON_PRODUCT_CODES
from models.churn import churn_dataset, train_churn
from models.compact import signals_of
from models.evaluate import HISTORY, leave_last_n, ranking_metrics
from models.peers import AT, Case
from models.recs import SIGNAL_WEIGHTS
from models.recs_stream import train_signals

RETRAIN = "retrain"  # the key of a retrained version's metrics that holds its evaluation
HOLDOUT_ITEMS = 5  # recs: distinct items held out per user
CHURN_HORIZON_DAYS = 90
METRIC = {"recs": f"hr@{AT}", "churn": "roc_auc"}  # the metric that decides a promotion
MAX_EVENTS = 500_000  # events one run reads at most, the newest (~0.8 KB each once parsed)
MAX_AGE_DAYS = 400  # events older than this behind the newest one are left out
MIN_TEST_USERS = 50  # held-out users below which a better score is noise: never promoted
MIN_POLL_S = 1.0
MAX_POLL_S = 60.0


class NotEnoughData(ValueError):
    """The events cannot train or evaluate this model (the run skips it and says why)."""


# -- the schedule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A run is due `interval_ms` after the latest of: the worker's start, its own last attempt,
    and the newest retrained version in the registry (from any worker), so a restart does not
    retrain at once and two workers with the setting rarely both run."""

    interval_ms: int
    started_ms: int

    @classmethod
    def every(cls, hours: float, started_ms: int) -> Schedule:
        return cls(max(1, round(hours * 3_600_000)), started_ms)

    def next_ms(self, runs: Iterable[int]) -> int:
        return max([self.started_ms, *runs]) + self.interval_ms

    def due(self, now_ms: int, runs: Iterable[int]) -> bool:
        return now_ms >= self.next_ms(runs)

    def poll_s(self) -> float:
        """How often the worker looks: a quarter of the interval, within 1..60 s."""
        return min(MAX_POLL_S, max(MIN_POLL_S, self.interval_ms / 4000))


def retrained_at(listing: Iterable[Mapping[str, Any]]) -> list[int]:
    """When each retrained version of a registry listing was trained (ms): its metrics'
    `retrain.at_ms` (versions trained otherwise have none)."""
    out = []
    for row in listing:
        mark = (row.get("metrics") or {}).get(RETRAIN)
        at = mark.get("at_ms") if isinstance(mark, dict) else None
        if isinstance(at, int) and not isinstance(at, bool):
            out.append(at)
    return out


# -- what a run trains on --------------------------------------------------------------------


def bound(events: Sequence[Event], max_events: int = MAX_EVENTS) -> list[Event]:
    """The newest `max_events` events within `MAX_AGE_DAYS` of the newest, oldest first."""
    if not events:
        return []
    ordered = sorted(events, key=lambda e: e.ts)
    oldest = ordered[-1].ts - MAX_AGE_DAYS * DAY_MS
    return [e for e in ordered[-max_events:] if e.ts >= oldest]


def unfenced(records: Iterable[tuple[int, Event]], erased: Mapping[str, int]) -> list[Event]:
    """The events of (record time ms, event) whose user was not erased after the record was
    produced (the fold's erasure fence, streams/app.py: an erased user's history stays out; a
    click counts as produced when its link was made, engine.erasure.produced_ms)."""
    return [e for at, e in records if produced_ms(at, e) > erased.get(e.user_id, -1)]


# -- the comparison --------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(name: str, metrics: Mapping[str, Any], enabled: bool) -> Decision:
    """Whether a retrained version (its `metrics`) replaces the active one: only with promotion
    enabled and when it is strictly better on the decisive metric of the same held-out data, of
    at least `MIN_TEST_USERS` users (a few users after a restart of the embedded broker)."""
    metric = METRIC[name]
    mark = metrics.get(RETRAIN) or {}
    new = (mark.get("new") or {}).get(metric)
    old = (mark.get("active") or {}).get(metric)
    if not isinstance(new, int | float) or not isinstance(old, int | float):
        return Decision(False, f"{metric} missing for the new or the active version")
    if new <= old:
        return Decision(False, f"{metric} {new} is not above the active version's {old}")
    users = mark.get("test_users")
    if not isinstance(users, int) or users < MIN_TEST_USERS:
        return Decision(False, f"{metric} {new} > {old} on {users} held-out users only "
                        f"(promotion needs {MIN_TEST_USERS})")  # fmt: skip
    if not enabled:
        return Decision(False, f"{metric} {new} > {old}, but PERSONA_RETRAIN_PROMOTE is off")
    return Decision(True, f"{metric} {new} > {old}")


@dataclass
class Retrained:
    """One model of a run: the new version (None when skipped) and why."""

    name: str
    model: Any = None
    skipped: str = ""


def score_recs(model: Any, cases: Sequence[Case], n_items: int) -> dict[str, float]:
    """HR@10, NDCG@10, MRR, coverage of a recommender (a `RecsScorer`) on held-out cases."""
    lists = [
        model.recommend(list(c.history[:HISTORY]), {i for i, _ in c.history}, AT) for c in cases
    ]
    return ranking_metrics(lists, cases, n_items)


def retrain_recs(events: Sequence[Event], active: Any, now_ms: int) -> Any:
    """A recommender trained without each user's last items, evaluated with the active one."""
    train, cases = leave_last_n(events, HOLDOUT_ITEMS, UCI_NON_PRODUCT_CODES)
    if not cases:
        raise NotEnoughData(f"no user has more than {HOLDOUT_ITEMS} distinct items to hold out")
    # The streaming trainer's arrays, with each user's co-occurrence capped (issue 21 item 4):
    # one heavy user or bot in the window cannot make the run quadratic.
    model = train_signals(signals_of(train), ignore=UCI_NON_PRODUCT_CODES, evaluate_split=False)
    n_items = len({e.item_id for e in train if e.type in SIGNAL_WEIGHTS and e.item_id})
    held = f"each user's last {HOLDOUT_ITEMS} distinct items"
    new, old = score_recs(model, cases, n_items), score_recs(active, cases, n_items)
    model.metrics.update(_mark(now_ms, events, held, len(cases), new, old, active))
    return model


def _mark(
    now_ms: int,
    events: Sequence[Event],
    held: str,
    cases: int,
    new: dict[str, Any],
    old: dict[str, Any],
    active: Any,
) -> dict[str, Any]:
    """The evaluation a retrained version carries in its metrics."""
    return {
        RETRAIN: {
            "at_ms": now_ms,
            "events": len(events),
            "holdout": held,
            "test_users": cases,
            "new": new,
            "active": {"version": active.version, **old},
        }
    }


def _raw(x: np.ndarray) -> np.ndarray:
    """The raw features back from `churn_dataset`'s log-scaled ones (scorers take raw)."""
    return np.asarray(np.sign(x) * np.expm1(np.abs(x)))


def _churn_scores(model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p = np.clip(np.asarray(model.score_batch(_raw(x)), dtype=np.float64), 0.0, 1.0)
    return {
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
        "brier": round(float(brier_score_loss(y, p)), 4),
    }


def retrain_churn(
    events: Sequence[Event], active: Any, now_ms: int, horizon_days: int = CHURN_HORIZON_DAYS
) -> Any:
    """A churn model fitted one horizon back, evaluated with the active one on the last one."""
    if not events:
        raise NotEnoughData("no events")
    newest, oldest = max(e.ts for e in events), min(e.ts for e in events)
    c2 = newest - horizon_days * DAY_MS
    c1 = c2 - horizon_days * DAY_MS
    if oldest >= c1:
        span = (newest - oldest) / DAY_MS
        raise NotEnoughData(f"needs over {2 * horizon_days} days of events, has {span:.1f}")
    try:
        test = churn_dataset(events, horizon_days, c2)
        if len(set(test.y.tolist())) < 2:
            raise NotEnoughData("the held-out users all churned or all stayed")
        model = train_churn(events, horizon_days, cutoff_ms=c1)
    except NotEnoughData:
        raise
    except ValueError as exc:  # too few users, labels all the same
        raise NotEnoughData(str(exc)) from None
    new, old = _churn_scores(model, test.x, test.y), _churn_scores(active, test.x, test.y)
    held = f"users active before the last {horizon_days} days, labels from those days"
    model.metrics.update(_mark(now_ms, events, held, len(test.y), new, old, active))
    return model


TRAINERS = {"recs": retrain_recs, "churn": retrain_churn}


def retrain_all(events: Sequence[Event], active: Mapping[str, Any], now_ms: int) -> list[Retrained]:
    """Every model of `active` ({name: the active version's scorer}) retrained from `events`."""
    out = []
    for name, current in active.items():
        try:
            model = TRAINERS[name](events, current, now_ms)
        except NotEnoughData as exc:
            out.append(Retrained(name, skipped=str(exc)))
            continue
        if model.version == current.version:  # same content in the same minute: nothing new
            out.append(Retrained(name, skipped=f"the same as the active {current.version}"))
        else:
            out.append(Retrained(name, model))
    return out
