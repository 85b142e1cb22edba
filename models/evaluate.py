"""Offline evaluation on a time split (`persona models evaluate`).

Recommendations: everything before T = newest event - `test_days` trains; users with a history
before T who buy items new to them in [T, end] are the test cases; a model ranks 10 items from the
user's 30 most recent items before T (what a profile holds), never items bought before T.
HR@10 = share of users with at least one bought item in the list; NDCG@10 with binary relevance;
coverage = distinct items recommended / items known at T. Baselines: popularity, and implicit-ALS
when the optional `implicit` package is installed: `implicit_als` ranks with the user factors it
learnt from each user's whole history; `als_embedding` is the same item factors served as the
engine serves an embedding table (from the 30 recent items a profile holds).

Churn: a model is fitted with the cut-off c1 = newest - 2 x horizon (labels from [c1, c1 + h)) and
tested with the cut-off c2 = newest - horizon (labels from [c2, c2 + h)): train and test labels
never overlap in time. ROC AUC, PR AUC, Brier score and a calibration table (deciles of the score),
against an RFM logistic baseline (purchase recency, orders, monetary).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Container, Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from engine.events import Event
from engine.features import DAY_MS, FEATURE_NAMES
from models.churn import _fit, churn_dataset
from models.recs import SIGNAL_WEIGHTS, fit_recommender
from models.sklearn_churn import GBM_PARAMS

AT = 10
HISTORY = 30
RFM = ("purchase_recency_days", "orders", "monetary")
Ranker = Callable[[str, list[tuple[str, int]], set[str]], list[str]]


# -- recommendations -------------------------------------------------------------------------


def recs_split(
    events: Sequence[Event], test_days: int = 30, ignore: Container[str] = ()
) -> tuple[list[Event], dict[str, tuple[list[tuple[str, int]], set[str], set[str]]]]:
    """(training events, {user: (recent items newest first, bought before T, targets)})."""
    end = max(e.ts for e in events)
    t = end - test_days * DAY_MS
    train = [e for e in events if e.ts < t]
    recent: dict[str, dict[str, int]] = defaultdict(dict)
    bought: dict[str, set[str]] = defaultdict(set)
    for e in train:
        if e.item_id and e.type in SIGNAL_WEIGHTS and e.item_id not in ignore:
            recent[e.user_id][e.item_id] = max(e.ts, recent[e.user_id].get(e.item_id, 0))
            if e.type == "purchase":
                bought[e.user_id].add(e.item_id)
    targets: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if (
            e.ts >= t
            and e.type == "purchase"
            and e.item_id
            and e.item_id not in ignore
            and e.user_id in recent
            and e.item_id not in bought[e.user_id]
        ):
            targets[e.user_id].add(e.item_id)
    cases = {
        u: (
            sorted(recent[u].items(), key=lambda x: (-x[1], x[0]))[:HISTORY],
            bought[u],
            items,
        )
        for u, items in sorted(targets.items())
    }
    return train, cases


def ranking_metrics(
    ranker: Ranker, cases: dict[str, tuple[list[tuple[str, int]], set[str], set[str]]], n_items: int
) -> dict[str, float]:
    hits = 0
    ndcg = 0.0
    shown: set[str] = set()
    for user, (history, bought, targets) in cases.items():
        ranked = ranker(user, history, bought)[:AT]
        shown.update(ranked)
        gains = [1.0 / math.log2(i + 2) for i, item in enumerate(ranked) if item in targets]
        hits += bool(gains)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(targets), AT)))
        ndcg += sum(gains) / ideal
    n = max(len(cases), 1)
    return {
        f"hr@{AT}": round(hits / n, 4),
        f"ndcg@{AT}": round(ndcg / n, 4),
        "coverage": round(len(shown) / max(n_items, 1), 4),
    }


def _als_ranker(train: Sequence[Event], ignore: Container[str]) -> Ranker | None:
    """implicit-ALS on the same signal weights, or None when `implicit` is not installed."""
    try:
        from implicit.als import AlternatingLeastSquares  # optional peer, not a dependency
    except ImportError:
        return None
    from scipy.sparse import csr_matrix

    users: dict[str, int] = {}
    items: dict[str, int] = {}
    cells: dict[tuple[int, int], float] = {}
    for e in train:
        w = SIGNAL_WEIGHTS.get(e.type)
        if w is None or not e.item_id or e.item_id in ignore:
            continue
        key = (users.setdefault(e.user_id, len(users)), items.setdefault(e.item_id, len(items)))
        cells[key] = max(cells.get(key, 0.0), w)
    rows, cols = zip(*cells, strict=True)
    matrix = csr_matrix(
        (np.fromiter(cells.values(), np.float32), (rows, cols)), shape=(len(users), len(items))
    )
    model = AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05, random_state=0)
    model.fit(matrix, show_progress=False)
    names = list(items)

    def rank(user: str, history: list[tuple[str, int]], bought: set[str]) -> list[str]:
        u = users.get(user)
        if u is None:
            return []
        ids, _ = model.recommend(u, matrix[u], N=AT + len(bought), filter_already_liked_items=False)
        return [names[i] for i in ids if names[i] not in bought][:AT]

    return rank


def evaluate_recs(
    events: Sequence[Event], test_days: int = 30, ignore: Container[str] = (), k: int = 50
) -> dict[str, Any]:
    train, cases = recs_split(events, test_days, ignore)
    model = fit_recommender(train, k, ignore)
    n_items = len(model.items)
    rankers: dict[str, Ranker] = {
        "item_knn": lambda _u, h, b: model.recommend(h, b, AT),
        "popularity": lambda _u, _h, b: model.popular_items(AT, exclude=b),
    }
    als = _als_ranker(train, ignore)
    if als is not None:
        rankers["implicit_als"] = als
        from models.embedding import train_als_recs

        embedding = train_als_recs(train, ignore)
        rankers["als_embedding"] = lambda _u, h, b: embedding.recommend(h, b, AT)
    return {
        "test_days": test_days,
        "test_users": len(cases),
        "items": n_items,
        "models": {name: ranking_metrics(r, cases, n_items) for name, r in rankers.items()},
        "implicit_installed": als is not None,
    }


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


def evaluate_churn(events: Sequence[Event], horizon_days: int = 90) -> dict[str, Any]:
    end = max(e.ts for e in events)
    c2 = end - horizon_days * DAY_MS
    c1 = c2 - horizon_days * DAY_MS
    train = churn_dataset(events, horizon_days, c1)
    test = churn_dataset(events, horizon_days, c2)
    out: dict[str, Any] = {
        "horizon_days": horizon_days,
        "train_users": len(train.users),
        "test_users": len(test.users),
        "test_positive_rate": round(float(test.y.mean()), 4),
        "models": {},
    }
    scaler, clf = _fit(train.x, train.y)
    out["models"]["logistic"] = _churn_metrics(
        test.y, clf.predict_proba(scaler.transform(test.x))[:, 1]
    )
    gbm = HistGradientBoostingClassifier(**GBM_PARAMS).fit(train.x, train.y)
    out["models"]["gbm"] = _churn_metrics(test.y, gbm.predict_proba(test.x)[:, 1])
    idx = [FEATURE_NAMES.index(n) for n in RFM]
    scaler, clf = _fit(train.x[:, idx], train.y)
    out["models"]["rfm_logistic"] = _churn_metrics(
        test.y, clf.predict_proba(scaler.transform(test.x[:, idx]))[:, 1]
    )
    return out


def markdown(recs: dict[str, Any] | None, churn: dict[str, Any] | None) -> str:
    """The evaluation as Markdown tables (what the README shows)."""
    lines: list[str] = []
    if recs:
        lines += [
            f"Recommendations: last {recs['test_days']} days held out, {recs['test_users']} "
            f"test users, {recs['items']} items",
            "",
            f"| model | HR@{AT} | NDCG@{AT} | coverage |",
            "|---|---|---|---|",
        ]
        for name, m in recs["models"].items():
            lines.append(f"| {name} | {m[f'hr@{AT}']} | {m[f'ndcg@{AT}']} | {m['coverage']} |")
        if not recs["implicit_installed"]:
            lines.append(
                "| implicit_als | (the optional `implicit` package is not installed) | | |"
            )
        lines.append("")
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
