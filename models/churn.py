"""The churn model: logistic regression on log-scaled, standardized profile features.

Scoring is plain numpy (no scikit-learn object at run time): for a feature vector `x` in
`engine.features.FEATURE_NAMES` order,

    z = (log_scale(x) - mean) / scale
    p = 1 / (1 + exp(-(z . coef + intercept)))

The artifact is one JSON file holding exactly those numbers plus metadata.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from engine.events import Event
from engine.features import DAY_MS, FEATURE_NAMES, features, log_scale
from engine.profile import Profile, apply
from models.artifacts import (
    ModelLoadError,
    make_version,
    read_json,
    require,
    rfc3339,
    utc_now,
)

FORMAT = 1
TRANSFORM = "signed_log1p"


@dataclass(frozen=True)
class ChurnModel:
    version: str
    created: str  # RFC 3339
    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    metrics: dict[str, Any] = field(default_factory=dict)
    name: str = "churn"

    def __post_init__(self) -> None:
        n = len(self.feature_names)
        if not len(self.mean) == len(self.scale) == len(self.coef) == n:
            raise ValueError("mean, scale and coef need one value per feature")

    # -- scoring ---------------------------------------------------------------------------------
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.asarray(self.mean, dtype=np.float64),
            np.asarray(self.scale, dtype=np.float64),
            np.asarray(self.coef, dtype=np.float64),
        )

    def score(self, vec: Sequence[float]) -> float:
        """Churn probability (0..1) of one raw feature vector (as `engine.features.features`)."""
        if len(vec) != len(self.coef):
            raise ValueError(f"expected {len(self.coef)} features, got {len(vec)}")
        z = sum(
            (x - m) / s * c
            for x, m, s, c in zip(
                log_scale(list(vec)), self.mean, self.scale, self.coef, strict=True
            )
        )
        return _sigmoid(z + self.intercept)

    def score_batch(self, matrix: np.ndarray) -> np.ndarray:
        """Churn probabilities of the rows of a (n, n_features) matrix of raw features."""
        x = np.asarray(matrix, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.coef):
            raise ValueError(f"expected shape (n, {len(self.coef)}), got {x.shape}")
        mean, scale, coef = self._arrays()
        z = ((np.sign(x) * np.log1p(np.abs(x)) - mean) / scale) @ coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -500.0, 500.0))))

    # -- artifacts -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "kind": "logistic_regression",
            "version": self.version,
            "created": self.created,
            "feature_names": list(self.feature_names),
            "transform": TRANSFORM,
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "metrics": self.metrics,
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return p

    @classmethod
    def load(cls, path: str | Path) -> ChurnModel:
        p = Path(path)
        data = read_json(p, "churn")
        require(data, p, "version", "created", "feature_names", "mean", "scale", "coef")
        if data.get("name", "churn") != "churn" or data.get("format") != FORMAT:
            raise ModelLoadError(f"{p}: not a format-{FORMAT} churn artifact")
        if data.get("transform") != TRANSFORM:
            raise ModelLoadError(f"{p}: unknown feature transform {data.get('transform')!r}")
        names = tuple(data["feature_names"])
        if names != FEATURE_NAMES:
            raise ModelLoadError(
                f"{p}: the model was trained on features {list(names)} but this engine computes "
                f"{list(FEATURE_NAMES)}; retrain it (persona models train) or use a matching engine"
            )
        try:
            model = cls(
                version=str(data["version"]),
                created=str(data["created"]),
                feature_names=names,
                mean=tuple(float(v) for v in data["mean"]),
                scale=tuple(float(v) for v in data["scale"]),
                coef=tuple(float(v) for v in data["coef"]),
                intercept=float(data.get("intercept", 0.0)),
                metrics=dict(data.get("metrics") or {}),
            )
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{p}: malformed churn artifact: {exc}") from None
        if any(s <= 0 or not math.isfinite(s) for s in model.scale):
            raise ModelLoadError(f"{p}: scale values must be finite and positive")
        return model


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


# -- training --------------------------------------------------------------------------------


@dataclass
class ChurnDataset:
    users: list[str]
    x: np.ndarray  # log-scaled features as of the cut-off
    y: np.ndarray  # 1 = churned (no purchase within the horizon after the cut-off)
    cutoff_ms: int


def churn_dataset(
    events: Iterable[Event], horizon_days: int = 90, cutoff_ms: int | None = None
) -> ChurnDataset:
    """Profiles folded from events before the cut-off (default: newest event minus the horizon);
    label 1 when the user, active before the cut-off, made no purchase in [cut-off, +horizon)."""
    ordered = sorted(events, key=lambda e: e.ts)
    if not ordered:
        raise ValueError("no events to train on")
    horizon_ms = horizon_days * DAY_MS
    if cutoff_ms is None:
        cutoff_ms = ordered[-1].ts - horizon_ms
    profiles: dict[str, Profile] = {}
    buyers_after: set[str] = set()
    for event in ordered:
        if event.ts < cutoff_ms:
            profiles[event.user_id] = apply(profiles.get(event.user_id), event)
        elif event.ts < cutoff_ms + horizon_ms and event.type == "purchase":
            buyers_after.add(event.user_id)
    users = sorted(profiles)
    if not users:
        raise ValueError("no user was active before the cut-off")
    x = np.array([log_scale(features(profiles[u], cutoff_ms)) for u in users], dtype=np.float64)
    y = np.array([0 if u in buyers_after else 1 for u in users], dtype=np.int64)
    return ChurnDataset(users, x, y, cutoff_ms)


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(class_weight="balanced", max_iter=1000, C=1.0)
    clf.fit(scaler.transform(x), y)
    return scaler, clf


def _held_out_split(users: list[str], seed: int = 7) -> np.ndarray:
    """Boolean mask of the 25% test users (seeded, so training is reproducible)."""
    rng = np.random.default_rng(seed)
    return rng.random(len(users)) < 0.25


def train_churn(
    events: Iterable[Event], horizon_days: int = 90, cutoff_ms: int | None = None
) -> ChurnModel:
    """Fit the churn model. AUC is measured on 25% held-out users with a model fit on the other
    75%; the returned model is then refit on all users."""
    data = churn_dataset(events, horizon_days, cutoff_ms)
    x, y = data.x, data.y
    if len(set(y.tolist())) < 2:
        raise ValueError("churn labels are all the same: need churned and retained users")
    test = _held_out_split(data.users)
    metrics: dict[str, Any] = {
        "n_users": len(data.users),
        "positive_rate": round(float(y.mean()), 4),
        "horizon_days": horizon_days,
        "cutoff": rfc3339(_from_ms(data.cutoff_ms)),
    }
    if len(set(y[test].tolist())) == 2 and len(set(y[~test].tolist())) == 2:
        scaler, clf = _fit(x[~test], y[~test])
        proba = clf.predict_proba(scaler.transform(x[test]))[:, 1]
        metrics["roc_auc"] = round(float(roc_auc_score(y[test], proba)), 4)
        metrics["n_test_users"] = int(test.sum())
        # the same split scored by recency alone, as a reference point
        recency = x[test, FEATURE_NAMES.index("recency_days")]
        metrics["roc_auc_recency_only"] = round(float(roc_auc_score(y[test], recency)), 4)
    else:
        print("churn: too few users for a held-out AUC", file=sys.stderr)
    scaler, clf = _fit(x, y)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    when = utc_now()
    mean = tuple(float(v) for v in scaler.mean_)
    scales = tuple(float(v) for v in scale)
    coef = tuple(float(v) for v in clf.coef_[0])
    intercept = float(clf.intercept_[0])
    content = json.dumps([mean, scales, coef, intercept]).encode()
    return ChurnModel(
        version=make_version("churn", when, content),
        created=rfc3339(when),
        feature_names=FEATURE_NAMES,
        mean=mean,
        scale=scales,
        coef=coef,
        intercept=intercept,
        metrics=metrics,
    )


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
