"""The churn model: logistic regression on log-scaled, standardized profile features.

Scoring is plain numpy (no scikit-learn object at run time): for a feature vector `x` in
`engine.features.FEATURE_NAMES` order, restricted to the model's `feature_names` (a subset of the
engine's, in the engine's order, so a model trained before a feature was added still scores),

    z = (log_scale(x) - mean) / scale
    p = 1 / (1 + exp(-(z . coef + intercept)))

The artifact is one JSON file holding exactly those numbers plus metadata. `train_churn`
calibrates the probabilities with Platt scaling (a slope and an offset on the log-odds, fitted on
out-of-fold scores) and folds them into `coef` and `intercept`: the calibrated model is the
artifact, and serving costs nothing more. `metrics["calibration"]` records the fit.
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
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from engine.events import Event
from engine.features import DAY_MS, FEATURE_NAMES, features, log_scale
from engine.profile import Profile, apply
from models.artifacts import (
    ModelLoadError,
    json_object,
    make_version,
    read_feature_names,
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
    # positions of feature_names in FEATURE_NAMES (the engine's vector)
    columns: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.feature_names)
        if not len(self.mean) == len(self.scale) == len(self.coef) == n:
            raise ValueError("mean, scale and coef need one value per feature")
        object.__setattr__(self, "columns", columns_of(self.feature_names))

    # -- scoring ---------------------------------------------------------------------------------
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.asarray(self.mean, dtype=np.float64),
            np.asarray(self.scale, dtype=np.float64),
            np.asarray(self.coef, dtype=np.float64),
        )

    def score(self, vec: Sequence[float]) -> float:
        """Churn probability (0..1) of one raw feature vector (as `engine.features.features`)."""
        if len(vec) != len(FEATURE_NAMES):
            raise ValueError(f"expected {len(FEATURE_NAMES)} features, got {len(vec)}")
        mine = [vec[i] for i in self.columns]
        z = sum(
            (x - m) / s * c
            for x, m, s, c in zip(log_scale(mine), self.mean, self.scale, self.coef, strict=True)
        )
        return _sigmoid(z + self.intercept)

    def score_batch(self, matrix: np.ndarray) -> np.ndarray:
        """Churn probabilities of the rows of a (n, n_features) matrix of raw features."""
        x = np.asarray(matrix, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected shape (n, {len(FEATURE_NAMES)}), got {x.shape}")
        if len(self.columns) != len(FEATURE_NAMES):
            x = x[:, self.columns]
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
        names = read_feature_names(data, p)
        try:
            columns_of(names)
        except ValueError:
            raise ModelLoadError(
                f"{p}: the model was trained on features {list(names)} but this engine computes "
                f"{list(FEATURE_NAMES)}; retrain it (persona models train) or use a matching engine"
            ) from None
        try:
            model = cls(
                version=str(data["version"]),
                created=str(data["created"]),
                feature_names=names,
                mean=tuple(float(v) for v in data["mean"]),
                scale=tuple(float(v) for v in data["scale"]),
                coef=tuple(float(v) for v in data["coef"]),
                intercept=float(data.get("intercept", 0.0)),
                metrics=json_object(data, "metrics", p),
            )
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{p}: malformed churn artifact: {exc}") from None
        if any(s <= 0 or not math.isfinite(s) for s in model.scale):
            raise ModelLoadError(f"{p}: scale values must be finite and positive")
        numbers = (*model.mean, *model.coef, model.intercept)
        if not all(math.isfinite(v) for v in numbers):  # NaN scores for every user otherwise
            raise ModelLoadError(f"{p}: mean, coef and intercept must be finite numbers")
        if not names:
            raise ModelLoadError(f"{p}: a churn model needs at least one feature")
        if not math.isfinite(max_logit(model)):
            raise ModelLoadError(
                f"{p}: mean, scale and coef make scores overflow (inf - inf is a NaN churn)"
            )
        return model


# |sign(x) * log1p(|x|)| of any finite float64 feature value is below this (log1p(1.8e308) = 709.8)
MAX_LOG_FEATURE = 710.0


def max_logit(model: ChurnModel) -> float:
    """A bound on |z . coef + intercept| over every finite feature vector: inf when some
    feature's term, or their sum, can overflow (then scores can be inf - inf = NaN)."""
    total = abs(model.intercept)
    for m, s, c in zip(model.mean, model.scale, model.coef, strict=True):
        total += (MAX_LOG_FEATURE + abs(m)) / s * abs(c)  # inf once any step overflows
    return total


def columns_of(names: Sequence[str]) -> tuple[int, ...]:
    """Where each name sits in FEATURE_NAMES; ValueError unless they are distinct engine
    features in the engine's order."""
    if any(not isinstance(n, str) or n not in FEATURE_NAMES for n in names):
        raise ValueError(f"features {list(names)} are not all among {list(FEATURE_NAMES)}")
    columns = tuple(FEATURE_NAMES.index(n) for n in names)
    if list(columns) != sorted(set(columns)):
        raise ValueError(f"features {list(names)} are repeated or not in the engine's order")
    return columns


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


def nobody_before(horizon_days: int, span_ms: int) -> str:
    """Why no churn data set can be made: nobody was active before the cut-off (events spanning
    less than the horizon, as the six-week demo against the default 90 days)."""
    return (
        f"no user was active before the cut-off (the newest event minus the {horizon_days}-day "
        f"horizon); the events span {span_ms / DAY_MS:.0f} days: train churn on a longer history "
        "or with a shorter --horizon-days"
    )


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
        raise ValueError(nobody_before(horizon_days, ordered[-1].ts - ordered[0].ts))
    x = np.array([log_scale(features(profiles[u], cutoff_ms)) for u in users], dtype=np.float64)
    y = np.array([0 if u in buyers_after else 1 for u in users], dtype=np.int64)
    return ChurnDataset(users, x, y, cutoff_ms)


MIN_SCALE = 1e-3  # of a log-scaled feature's standard deviation


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[StandardScaler, LogisticRegression]:
    """A plain (unweighted) logistic regression on standardized features: class weights would
    push every probability towards 0.5 (CDNOW's Brier score 0.153 with them, 0.090 without).
    A feature (nearly) constant in training keeps the scale 1: divided by its tiny spread, any
    later change of it (a cohort's tenure, once time passes) swamped every other feature."""
    scaler = StandardScaler().fit(x)
    scaler.scale_ = np.where(scaler.scale_ > MIN_SCALE, scaler.scale_, 1.0)
    clf = LogisticRegression(max_iter=1000, C=1.0)
    clf.fit(scaler.transform(x), y)
    return scaler, clf


@dataclass(frozen=True)
class Linear:
    """A fitted logistic model on log-scaled features: the numbers `ChurnModel` stores."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(((x - self.mean) / self.scale) @ self.coef + self.intercept)

    def proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(self.logits(x), -500.0, 500.0))))

    def calibrated(self, slope: float, offset: float) -> Linear:
        """The model whose log-odds are `slope * z + offset` (Platt scaling folded in)."""
        return Linear(self.mean, self.scale, self.coef * slope, self.intercept * slope + offset)


def fit_linear(x: np.ndarray, y: np.ndarray) -> Linear:
    scaler, clf = _fit(x, y)
    return Linear(scaler.mean_, scaler.scale_, clf.coef_[0], float(clf.intercept_[0]))


def platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling: (slope, offset) of the logistic regression of `y` on the log-odds."""
    clf = LogisticRegression(C=1e6, max_iter=1000).fit(logits.reshape(-1, 1), y)
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


CALIBRATION_FOLDS = 5


def out_of_fold_logits(x: np.ndarray, y: np.ndarray, seed: int = 7) -> np.ndarray | None:
    """Each user's log-odds from a model fitted without them (5 folds, stratified, seeded), or
    None when a class has fewer users than folds."""
    if np.bincount(y, minlength=2).min() < CALIBRATION_FOLDS:
        return None
    out = np.zeros(len(y))
    folds = StratifiedKFold(CALIBRATION_FOLDS, shuffle=True, random_state=seed)
    for fit_part, held in folds.split(x, y):
        out[held] = fit_linear(x[fit_part], y[fit_part]).logits(x[held])
    return out


def fit_calibrated(x: np.ndarray, y: np.ndarray) -> tuple[Linear, dict[str, Any]]:
    """The logistic model on all users, Platt-calibrated on out-of-fold scores of the same
    cut-off's users (each scored by a model that never saw them); with what was done."""
    model = fit_linear(x, y)
    held = out_of_fold_logits(x, y)
    if held is None:
        return model, {"method": "none", "why": f"fewer than {CALIBRATION_FOLDS} users a class"}
    slope, offset = platt(held, y)
    if slope <= 0:  # the scores do not rank: a calibration would invert them
        return model, {"method": "none", "why": f"Platt slope {slope:.3f} is not positive"}
    info = {
        "method": "platt",
        "slope": round(slope, 4),
        "offset": round(offset, 4),
        "fitted_on": f"out-of-fold scores of {len(y)} users, {CALIBRATION_FOLDS} folds",
    }
    return model.calibrated(slope, offset), info


def _held_out_split(users: list[str], seed: int = 7) -> np.ndarray:
    """Boolean mask of the 25% test users (seeded, so training is reproducible)."""
    rng = np.random.default_rng(seed)
    return rng.random(len(users)) < 0.25


def _held_out_metrics(data: ChurnDataset) -> dict[str, Any]:
    """ROC AUC and Brier score of the calibrated model fitted on 75% of the users, measured on
    the other 25% (empty when either part lacks a class)."""
    x, y, test = data.x, data.y, _held_out_split(data.users)
    if len(set(y[test].tolist())) < 2 or len(set(y[~test].tolist())) < 2:
        print("churn: too few users for a held-out AUC", file=sys.stderr)
        return {}
    proba = fit_calibrated(x[~test], y[~test])[0].proba(x[test])
    recency = x[test, FEATURE_NAMES.index("recency_days")]  # a reference point
    return {
        "roc_auc": round(float(roc_auc_score(y[test], proba)), 4),
        "brier": round(float(brier_score_loss(y[test], proba)), 4),
        "n_test_users": int(test.sum()),
        "roc_auc_recency_only": round(float(roc_auc_score(y[test], recency)), 4),
    }


def train_churn(
    events: Iterable[Event], horizon_days: int = 90, cutoff_ms: int | None = None
) -> ChurnModel:
    """Fit the calibrated churn model. AUC and Brier are measured on 25% held-out users with a
    model fit on the other 75%; the returned model is then fit on all users."""
    return train_churn_on(churn_dataset(events, horizon_days, cutoff_ms), horizon_days)


def train_churn_on(data: ChurnDataset, horizon_days: int) -> ChurnModel:
    """`train_churn` of a training set built already (models/churn_stream.py reads it from a
    file)."""
    if len(set(data.y.tolist())) < 2:
        raise ValueError("churn labels are all the same: need churned and retained users")
    metrics: dict[str, Any] = {
        "n_users": len(data.users),
        "positive_rate": round(float(data.y.mean()), 4),
        "horizon_days": horizon_days,
        "cutoff": rfc3339(_from_ms(data.cutoff_ms)),
        **_held_out_metrics(data),
    }
    fitted, metrics["calibration"] = fit_calibrated(data.x, data.y)
    return _model(fitted, metrics)


def _model(fitted: Linear, metrics: dict[str, Any]) -> ChurnModel:
    when = utc_now()
    mean = tuple(float(v) for v in fitted.mean)
    scales = tuple(float(v) for v in fitted.scale)
    coef = tuple(float(v) for v in fitted.coef)
    content = json.dumps([mean, scales, coef, fitted.intercept]).encode()
    return ChurnModel(
        version=make_version("churn", when, content),
        created=rfc3339(when),
        feature_names=FEATURE_NAMES,
        mean=mean,
        scale=scales,
        coef=coef,
        intercept=fitted.intercept,
        metrics=metrics,
    )


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
