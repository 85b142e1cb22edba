"""The report of a content experiment (issue 18 item 5; `GET /v1/experiments/{name}/report`). Pure.

Per arm (the experiment's variants, the control first, the holdout last): the users exposed and
their exposures (the `exposures` topic: one record per block answered to a consenting user), the
clicks on the experiment's block in the arm's variant (`click` events, `props.block` and
`props.variant`, made by the click redirect), the users who clicked (`clickers`; `ctr` is
clickers / users, a proportion), and the purchases made within `window_hours` after one of the
user's clicks (`buyers`, `purchases`, `revenue`: price x quantity; cancelled or returned purchases
do not count). A user counts in the arm of their first exposure; a click or purchase before it
does not count. Every arm but the control is compared with the control: the difference of `ctr`
and of the purchase rate (buyers / users) with models.experiments.difference's 95% interval
(Newcombe's hybrid score), and of revenue per user (zero for a user who bought nothing) with a
95% Welch normal interval. `sample_ratio` tests the users per arm against the configured split
(the holdout, then the arms' weights over the rest; models.experiments.sample_ratio): a
mismatch means the assignment or the logging is broken and the differences cannot be trusted.
Revenue adds amounts in whatever currency each event carried: run one experiment per currency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.content_experiments import HOLDOUT, ContentExperiment
from engine.events import Event
from engine.profile import is_reversal
from models.experiments import Z95, difference, sample_ratio

HOUR_MS = 3_600_000
DEFAULT_WINDOW_HOURS = 24.0
MAX_WINDOW_HOURS = 24.0 * 90


@dataclass
class ArmFigures:
    users: set[str] = field(default_factory=set)
    exposures: int = 0
    clicks: int = 0
    clickers: set[str] = field(default_factory=set)
    buyers: set[str] = field(default_factory=set)
    purchases: int = 0
    revenue: dict[str, float] = field(default_factory=dict)  # user -> revenue in the window

    def per_user_revenue(self) -> list[float]:
        return [self.revenue.get(user, 0.0) for user in self.users]

    def summary(self, variant: str) -> dict[str, Any]:
        n = len(self.users)
        total = sum(self.revenue.values())
        return {
            "variant": variant,
            "users": n,
            "exposures": self.exposures,
            "clicks": self.clicks,
            "clickers": len(self.clickers),
            "ctr": _ratio(len(self.clickers), n),
            "buyers": len(self.buyers),
            "purchase_rate": _ratio(len(self.buyers), n),
            "purchases": self.purchases,
            "revenue": round(total, 2),
            "revenue_per_user": _ratio(total, n),
        }


def _ratio(x: float, n: int) -> float | None:
    return round(x / n, 6) if n else None


def welch(a: list[float], b: list[float]) -> dict[str, Any]:
    """mean(b) - mean(a) with a 95% normal interval on Welch's standard error."""
    if len(a) < 2 or len(b) < 2:
        return {"difference": None, "ci95": None}
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    var_a = sum((x - mean_a) ** 2 for x in a) / (len(a) - 1)
    var_b = sum((x - mean_b) ** 2 for x in b) / (len(b) - 1)
    se = math.sqrt(var_a / len(a) + var_b / len(b))
    d = mean_b - mean_a
    return {"difference": round(d, 6), "ci95": [round(d - Z95 * se, 6), round(d + Z95 * se, 6)]}


def compare(control: ArmFigures, arm: ArmFigures) -> dict[str, Any]:
    """One arm against the control: arm - control for CTR, purchase rate, revenue per user."""
    n_a, n_b = len(control.users), len(arm.users)
    return {
        "ctr": difference(len(control.clickers), n_a, len(arm.clickers), n_b),
        "purchase_rate": difference(len(control.buyers), n_a, len(arm.buyers), n_b),
        "revenue_per_user": welch(control.per_user_revenue(), arm.per_user_revenue()),
    }


def content_report(
    experiment: ContentExperiment,
    exposures: Iterable[dict[str, Any]],
    events: Iterable[Event],
    window_hours: float = DEFAULT_WINDOW_HOURS,
) -> dict[str, Any]:
    """The report (see the module doc). An exposure is `{"experiment", "variant", "user_id",
    "ts", ...}`; `events` may hold anything (only clicks and purchases are read)."""
    arms = {variant: ArmFigures() for variant in experiment.variants}
    exposures, events = list(exposures), list(events)  # each is read twice
    first = _first_exposures(experiment.name, exposures, arms)
    clicks = _clicks(experiment.block, events, first, arms)
    _purchases(events, clicks, first, arms, int(window_hours * HOUR_MS))
    control = experiment.variants[0]
    return {
        "experiment": experiment.name,
        "block": experiment.block,
        "window_hours": window_hours,
        "control": control,
        "arms": [
            arms[v].summary(v)
            | ({} if v == control else {"vs_control": compare(arms[control], arms[v])})
            for v in experiment.variants
        ],
        "sample_ratio": sample_ratio(
            {v: len(arms[v].users) for v in experiment.variants}, expected_shares(experiment)
        ),
        "note": "ctr and purchase_rate are per exposed user; differences are arm - control "
        "with 95% intervals (Newcombe hybrid score for rates, Welch normal for revenue per "
        "user); sample_ratio checks users per arm against the split (mismatch: p < 0.001)",
    }


def expected_shares(experiment: ContentExperiment) -> dict[str, float]:
    """Each variant's configured fraction of the assigned users (engine.content_experiments
    `ContentExperiment.assign`): the holdout's, then the arms' weights over the rest."""
    total = sum(arm.weight for arm in experiment.arms)
    rest = 1.0 - experiment.holdout
    shares = {arm.variant: rest * arm.weight / total for arm in experiment.arms}
    return shares | ({HOLDOUT: experiment.holdout} if experiment.holdout > 0 else {})


def _ours(exposure: dict[str, Any], name: str) -> bool:
    """An exposure of this content experiment (a model experiment's of the same name is not)."""
    return exposure.get("experiment") == name and exposure.get("kind") == "content"


def _first_exposures(
    name: str, exposures: list[dict[str, Any]], arms: dict[str, ArmFigures]
) -> dict[str, tuple[int, str]]:
    """user -> (time, variant) of their first exposure; counts every exposure in its arm."""
    first: dict[str, tuple[int, str]] = {}
    for exp in exposures:
        variant = str(exp.get("variant"))
        if not _ours(exp, name) or variant not in arms:
            continue
        user, ts = str(exp.get("user_id")), int(exp.get("ts") or 0)
        if user not in first or ts < first[user][0]:
            first[user] = (ts, variant)
    for exp in exposures:
        user = str(exp.get("user_id"))
        if _ours(exp, name) and user in first:
            arm = arms[first[user][1]]
            arm.users.add(user)
            arm.exposures += 1
    return first


def _clicks(
    block: str,
    events: list[Event],
    first: dict[str, tuple[int, str]],
    arms: dict[str, ArmFigures],
) -> dict[str, list[int]]:
    """Counts the arms' clicks; returns user -> times of their counted clicks."""
    seen: set[str] = set()
    times: dict[str, list[int]] = {}
    for event in events:
        start = first.get(event.user_id)
        if event.type != "click" or start is None or event.event_id in seen:
            continue
        props = event.props
        if props.get("block") != block or props.get("variant") != start[1] or event.ts < start[0]:
            continue
        seen.add(event.event_id)
        arm = arms[start[1]]
        arm.clicks += 1
        arm.clickers.add(event.user_id)
        times.setdefault(event.user_id, []).append(event.ts)
    return times


def _purchases(
    events: list[Event],
    clicks: dict[str, list[int]],
    first: dict[str, tuple[int, str]],
    arms: dict[str, ArmFigures],
    window_ms: int,
) -> None:
    """Counts the purchases made within `window_ms` after one of the user's clicks."""
    seen: set[str] = set()
    for event in events:
        times = clicks.get(event.user_id)
        if event.type != "purchase" or not times or is_reversal(event) or event.event_id in seen:
            continue
        if not any(t <= event.ts <= t + window_ms for t in times):
            continue
        seen.add(event.event_id)
        arm = arms[first[event.user_id][1]]
        arm.buyers.add(event.user_id)
        arm.purchases += 1
        amount = (event.price or 0.0) * event.quantity
        arm.revenue[event.user_id] = arm.revenue.get(event.user_id, 0.0) + amount
