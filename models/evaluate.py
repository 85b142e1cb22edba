"""Offline evaluation (`persona models evaluate`): one protocol for any events file, with peers.

Recommendations, two splits (issue 17):

- leave-last-N (`leave_last_n`, N = 5): for each user with more than N distinct items, the items
  they first interacted with at or after the time of their N-th newest distinct item are held
  out, and only their events before that time train (other users' events all train);
- time split (`time_split`): everything before T = newest event - `test_days` trains; users with
  a history before T who buy items new to them in [T, end] are the test cases.

Every method ranks 10 items and never an item the user interacted with before the cut (all of
it, as the issue's peers did); targets are new to the user. HR@10 = share of users with at least
one target in the list; NDCG@10 with binary relevance; MRR = mean of 1 / rank of the first
target within the 10 (0 without one); coverage = distinct items recommended / items known in
training. Methods: `persona` (the default recommender, `models.recs`, from the user's long
history as a profile holds it: the newest 200 distinct items, times to the minute), the peers
of `models.peers` (popularity, plain cosine item-kNN over the whole history and the last N
items, EASE), and implicit-ALS when the optional `implicit` package is installed.

Churn: a model is fitted with the cut-off c1 = newest - 2 x horizon (labels from [c1, c1 + h)) and
tested with the cut-off c2 = newest - horizon (labels from [c2, c2 + h)): train and test labels
never overlap in time. ROC AUC, PR AUC, Brier score and a calibration table (deciles of the score)
of `persona` (the default churn model as `models.churn.train_churn` fits it: logistic regression on
every engine feature, Platt-calibrated), the same before calibration, gradient boosting on the
same features, and the peer: a plain RFM logistic regression (purchase recency, orders, monetary;
no class weights).
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from engine.events import Event
from engine.features import DAY_MS, FEATURE_NAMES
from models.churn import ChurnDataset, _fit, churn_dataset, fit_calibrated, fit_linear
from models.peers import (
    AT,
    EASE_MAX_ITEMS,
    Case,
    Interactions,
    Ranker,
    ease_ranker,
    interactions,
    knn_ranker,
    popularity_ranker,
)
from models.recs import Recommender, fit_recommender
from models.sklearn_churn import GBM_PARAMS
from models.splits import HISTORY as HISTORY
from models.splits import HOLDOUT as HOLDOUT
from models.splits import held_history as held_history
from models.splits import leave_last_n as leave_last_n
from models.splits import sample as sample
from models.splits import signals
from models.splits import time_split as time_split

RFM = ("purchase_recency_days", "orders", "monetary")


# -- recommendations: methods and metrics ----------------------------------------------------


def ranking_metrics(
    lists: Sequence[list[str]], cases: Sequence[Case], n_items: int
) -> dict[str, float]:
    hits = 0
    ndcg = mrr = 0.0
    shown: set[str] = set()
    for ranked, case in zip(lists, cases, strict=True):
        ranked = ranked[:AT]
        shown.update(ranked)
        ranks = [i for i, item in enumerate(ranked) if item in case.targets]
        if ranks:
            hits += 1
            mrr += 1.0 / (ranks[0] + 1)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(case.targets), AT)))
        ndcg += sum(1.0 / math.log2(i + 2) for i in ranks) / ideal
    n = max(len(cases), 1)
    return {
        f"hr@{AT}": round(hits / n, 4),
        f"ndcg@{AT}": round(ndcg / n, 4),
        "mrr": round(mrr / n, 4),
        "coverage": round(len(shown) / max(n_items, 1), 4),
    }


def persona_ranker(model: Recommender) -> Ranker:
    """Persona's default recommender as served (`model`: `fit_recommender` of the training part,
    its EASE lambda searched for on that part alone): the long history a profile holds, every
    item of the history excluded."""

    def rank(cases: Sequence[Case]) -> list[list[str]]:
        return [model.recommend(held_history(c), {i for i, _ in c.history}, AT) for c in cases]

    return rank


def lambda_choice(model: Recommender | None) -> dict[str, Any] | None:
    """The EASE lambda the default training chose for `model` and what it saw (its metrics)."""
    if model is None or "ease_lambda" not in model.metrics:
        return None
    return {k: v for k, v in model.metrics.items() if k.startswith("ease_lambda")}


def als_ranker(data: Interactions, users: dict[str, int]) -> Ranker | None:
    """implicit-ALS on the binary matrix, or None when `implicit` is not installed."""
    try:
        from implicit.als import AlternatingLeastSquares  # optional peer, not a dependency
    except ImportError:
        return None
    model = AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05, random_state=0)
    model.fit(data.matrix, show_progress=False)

    def rank(cases: Sequence[Case]) -> list[list[str]]:
        out: list[list[str]] = []
        for c in cases:
            u, had = users.get(c.user), {i for i, _ in c.history}
            if u is None:
                out.append([])
                continue
            ids, _ = model.recommend(u, data.matrix[u], N=AT + len(had))
            out.append([data.items[i] for i in ids if data.items[i] not in had][:AT])
        return out

    return rank


def _implicit_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("implicit") is not None


def rankers(
    train: Sequence[Event],
    ignore: Container[str],
    n: int = HOLDOUT,
    persona: Recommender | None = None,
) -> dict[str, Ranker]:
    """Persona's default (`persona`, else fitted here) and every peer, fitted on `train`."""
    data = interactions(train, ignore)
    out: dict[str, Ranker] = {
        "persona": persona_ranker(persona or fit_recommender(train, 50, ignore)),
        "popularity": popularity_ranker(data),
        "item_knn": knn_ranker(data),
        f"item_knn_last{n}": knn_ranker(data, last=n),
        "ease": ease_ranker(data),
    }
    users = {u: i for i, u in enumerate(dict.fromkeys(e.user_id for e in signals(train, ignore)))}
    als = als_ranker(data, users)
    if als is not None:
        out["implicit_als"] = als
    return out


def evaluate_recs(
    events: Sequence[Event],
    protocol: str = "last-n",
    ignore: Container[str] = (),
    n: int = HOLDOUT,
    test_days: int = 30,
    max_users: int | None = None,
) -> dict[str, Any]:
    """Every method's metrics on one split: `protocol` "last-n" or "time"."""
    _require(events)
    if n < 1 or test_days < 1:
        raise ValueError("--holdout and --test-days are at least 1")
    if protocol == "last-n":
        train, cases = leave_last_n(events, n, ignore)
        name = f"leave-last-{n}"
    elif protocol == "time":
        _within_span(events, test_days)
        train, cases = time_split(events, test_days, ignore)
        name = f"time split, last {test_days} days"
    else:
        raise ValueError(f"unknown protocol {protocol!r}: last-n or time")
    cases = sample(cases, max_users)
    persona = fit_recommender(train, 50, ignore) if cases else None  # nothing to rank: no fit
    methods = rankers(train, ignore, n, persona) if persona else {}
    n_items = len(interactions(train, ignore).items)
    return {
        "protocol": name,
        "test_users": len(cases),
        "persona_lambda": lambda_choice(persona),
        "items": n_items,
        "ease_items": min(n_items, EASE_MAX_ITEMS),
        "models": {m: ranking_metrics(r(cases), cases, n_items) for m, r in methods.items()},
        "implicit_installed": _implicit_installed(),
    }


def _within_span(events: Sequence[Event], test_days: int) -> None:
    """ValueError naming the events' span when the time split's test window holds all of them
    out (nothing before it trains: "0 test users", said by nothing else)."""
    end = max(e.ts for e in events)
    span = (end - min(e.ts for e in events)) / DAY_MS
    if test_days >= span:
        raise ValueError(
            f"--test-days {test_days} holds out every event: the events span {span:.1f} days "
            f"(the time split trains on those before the newest - {test_days} days); use a "
            f"--test-days under {span:.1f}"
        )


# -- churn ---------------------------------------------------------------------------------


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Deciles of the score: users, mean predicted probability, observed churn rate."""
    order = np.argsort(p, kind="stable")
    rows = []
    for part in np.array_split(order, bins):
        if len(part):
            rows.append(
                {
                    "users": len(part),
                    "predicted": round(float(p[part].mean()), 3),
                    "observed": round(float(y[part].mean()), 3),
                }
            )
    return rows


def _churn_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return {
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
        "pr_auc": round(float(average_precision_score(y, p)), 4),
        "brier": round(float(brier_score_loss(y, p)), 4),
        "calibration": calibration(y, p),
    }


def _require(events: Sequence[Event]) -> None:
    if not events:
        raise ValueError("the file holds no events to evaluate")


def evaluate_churn(events: Sequence[Event], horizon_days: int = 90) -> dict[str, Any]:
    _require(events)
    if horizon_days < 1:
        raise ValueError("--horizon-days is at least 1")
    end = max(e.ts for e in events)
    span = (end - min(e.ts for e in events)) / DAY_MS
    if span <= 2 * horizon_days:  # else "no user was active before the cut-off" from c1
        raise ValueError(
            f"evaluating churn needs events over more than 2 x the horizon ({2 * horizon_days} "
            f"days: a model fitted at the newest event - {2 * horizon_days} days is tested at the "
            f"newest - {horizon_days}); the events span {span:.1f} days: use a --horizon-days "
            f"under {span / 2:.1f}"
        )
    c2 = end - horizon_days * DAY_MS
    c1 = c2 - horizon_days * DAY_MS
    train = churn_dataset(events, horizon_days, c1)
    test = churn_dataset(events, horizon_days, c2)
    out: dict[str, Any] = {
        "horizon_days": horizon_days,
        "train_users": len(train.users),
        "test_users": len(test.users),
        "test_positive_rate": round(float(test.y.mean()), 4),
        "models": {n: _churn_metrics(test.y, p) for n, p in churn_scores(train, test).items()},
    }
    return out


def churn_scores(train: ChurnDataset, test: ChurnDataset) -> dict[str, np.ndarray]:
    """Each churn method's probabilities for the test users, fitted on the training users."""
    x, y = train.x, train.y
    gbm = HistGradientBoostingClassifier(**GBM_PARAMS).fit(x, y)
    idx = [FEATURE_NAMES.index(n) for n in RFM]
    scaler, rfm = _fit(x[:, idx], y)
    return {
        "persona": fit_calibrated(x, y)[0].proba(test.x),
        "persona_uncalibrated": fit_linear(x, y).proba(test.x),
        "gbm": gbm.predict_proba(test.x)[:, 1],
        "rfm_logistic": rfm.predict_proba(scaler.transform(test.x[:, idx]))[:, 1],
    }


def recs_markdown(recs: dict[str, Any]) -> list[str]:
    """One split's table: a row per method."""
    lines = [
        f"Recommendations, {recs['protocol']}: {recs['test_users']} test users, {recs['items']} "
        f"items (EASE over the {recs['ease_items']} most popular)",
        "",
        f"| method | HR@{AT} | NDCG@{AT} | MRR | coverage |",
        "|---|---|---|---|---|",
    ]
    for name, m in recs["models"].items():
        lines.append(
            f"| {name} | {m[f'hr@{AT}']} | {m[f'ndcg@{AT}']} | {m['mrr']} | {m['coverage']} |"
        )
    if not recs["implicit_installed"]:
        lines.append("| implicit_als | (the optional `implicit` package is not installed) | | | |")
    return [*lines, "", *lambda_lines(recs.get("persona_lambda"))]


def lambda_lines(choice: dict[str, Any] | None) -> list[str]:
    """What the default training chose for `persona` on this split's training part."""
    if not choice:
        return []
    search = choice.get("ease_lambda_search")
    line = f"persona's EASE lambda: {choice['ease_lambda']:g} ({choice['ease_lambda_by']}"
    if search and search[f"hr@{AT}"]:
        figures = ", ".join(f"{lam} {hr:.3f}" for lam, hr in search[f"hr@{AT}"].items())
        line += f"; HR@{AT} on {search['users']} users of the training part: {figures}"
    return [line + ")", ""]


def markdown(recs: Sequence[dict[str, Any]] | None, churn: dict[str, Any] | None) -> str:
    """The evaluation as Markdown tables (what the README shows)."""
    lines: list[str] = []
    for split in recs or ():
        lines += recs_markdown(split)
    if churn:
        lines += [
            f"Churn: horizon {churn['horizon_days']} days, trained at cut-off newest - 2 x "
            f"horizon ({churn['train_users']} users), tested at newest - horizon "
            f"({churn['test_users']} users, {churn['test_positive_rate']:.0%} churned)",
            "",
            "| model | ROC AUC | PR AUC | Brier |",
            "|---|---|---|---|",
        ]
        for name, m in churn["models"].items():
            lines.append(f"| {name} | {m['roc_auc']} | {m['pr_auc']} | {m['brier']} |")
        lines += ["", "Calibration (deciles of the score, predicted / observed churn rate):", ""]
        names = list(churn["models"])
        lines.append("| decile | " + " | ".join(names) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        for i in range(len(churn["models"][names[0]]["calibration"])):
            cells = [
                f"{churn['models'][n]['calibration'][i]['predicted']:.2f} / "
                f"{churn['models'][n]['calibration'][i]['observed']:.2f}"
                for n in names
            ]
            lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
