"""Churn scorers that are scikit-learn classifiers, stored with skops (never plain pickle).

Artifact directory: `churn.json` (`format` 1, `name` "churn", `kind` "sklearn", `feature_names`
equal to `engine.features.FEATURE_NAMES`, optional `version`, `created`, `metrics`, `training`) and
`churn.skops`, a scikit-learn classifier with `predict_proba` that takes raw feature rows (do your
own scaling inside a Pipeline). `feature_names` may also be a subset of the engine's names in the
engine's order (a model trained before a feature was added): the estimator gets those columns.
skops refuses to build any type that is not trusted; we trust its own default list plus exactly
`TRUSTED_TYPES`, and reject an artifact that needs anything else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio

from engine.features import FEATURE_NAMES
from models.artifacts import (
    ModelLoadError,
    check_zip_members,
    json_object,
    read_feature_names,
    read_json,
    require,
)
from models.churn import ChurnDataset, churn_dataset, columns_of

FORMAT = 1
KIND = "sklearn"
META_NAME = "churn.json"
SKOPS_NAME = "churn.skops"
# What a .skops file's members may inflate to in all: a gradient-boosted churn model of the
# engine's features takes well under 1 MB. skops holds about six times what it inflates at its
# peak (a 200 MB member: 1.2 GB of RSS; a 417 KB file whose one member inflated to 400 MB took
# 2.4 GB before its load was refused), so this bound keeps a load under ~400 MB.
MAX_SKOPS_BYTES = 64 << 20

PROBE_ROW = [1e6] * len(FEATURE_NAMES)  # large feature values, as a long history has
# Types beyond skops' defaults that we accept in a churn artifact (checked before loading).
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.Interval",
    "sklearn.tree._tree.Tree",
    "numpy.dtype",
)


@dataclass
class SklearnChurnModel:
    """A scikit-learn classifier behind the churn contract (raw features in, P(churn) out)."""

    version: str
    created: str
    estimator: Any
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    feature_names: tuple[str, ...] = FEATURE_NAMES
    name: str = "churn"

    def __post_init__(self) -> None:
        classes = list(getattr(self.estimator, "classes_", []))
        if not hasattr(self.estimator, "predict_proba") or 1 not in classes:
            raise ModelLoadError("a churn estimator needs predict_proba and the class 1 (churned)")
        self._col = classes.index(1)
        self._columns = list(columns_of(self.feature_names))

    def probe(self) -> None:
        """ModelLoadError unless the estimator gives probabilities in 0..1 for a few rows: one
        with NaN parameters scored every user NaN, one fitted on other columns than its
        `feature_names` failed every score."""
        rows = np.array([[0.0] * len(FEATURE_NAMES), [1.0] * len(FEATURE_NAMES), PROBE_ROW])
        try:
            scores = self.probabilities(rows)
        except Exception as exc:
            raise ModelLoadError(f"the churn estimator cannot score: {exc}") from None
        finite = scores.shape == (3,) and bool(np.isfinite(scores).all())
        if not finite or not bool(((scores >= 0) & (scores <= 1)).all()):
            raise ModelLoadError("the churn estimator does not give probabilities in 0..1")

    def score(self, vec: Sequence[float]) -> float:
        return float(self.score_batch(np.asarray([vec], dtype=np.float64))[0])

    def score_batch(self, matrix: np.ndarray) -> np.ndarray:
        p = self.probabilities(matrix)
        if p.size and not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
            # A model that passed its load-time check can still fail for extreme inputs (huge
            # but finite coefficients times a large spend: inf - inf). Such a score is no risk
            # (0.0): no churn trigger fires from it and no answer carries NaN.
            p = np.nan_to_num(np.clip(p, 0.0, 1.0), nan=0.0)
        return p

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        """The estimator's probability of churn for each row, as it gives them (the load-time
        check reads these: `score_batch` hides what is no probability)."""
        x = np.asarray(matrix, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected shape (n, {len(FEATURE_NAMES)}), got {x.shape}")
        if len(self._columns) != len(FEATURE_NAMES):
            x = x[:, self._columns]
        with np.errstate(all="ignore"):  # overflow gives inf or NaN, which the callers check
            p = self.estimator.predict_proba(x)[:, self._col]
        return np.asarray(p, dtype=np.float64)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        sio.dump(self.estimator, d / SKOPS_NAME)
        meta = {
            "format": FORMAT,
            "name": self.name,
            "kind": KIND,
            "version": self.version,
            "created": self.created,
            "feature_names": list(self.feature_names),
            "metrics": self.metrics,
            "training": self.training,
        }
        (d / META_NAME).write_text(json.dumps(meta, indent=1) + "\n", "utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> SklearnChurnModel:
        d = Path(directory)
        meta = read_json(d / META_NAME, "churn")
        require(meta, d / META_NAME, "version", "created", "feature_names")
        if meta.get("kind") != KIND or meta.get("format") != FORMAT:
            raise ModelLoadError(f"{d / META_NAME}: not a format-{FORMAT} sklearn churn artifact")
        names = read_feature_names(meta, d / META_NAME)
        try:
            columns_of(names)
        except ValueError:
            raise ModelLoadError(
                f"{d / META_NAME}: trained on features {meta['feature_names']} but this engine "
                f"computes {list(FEATURE_NAMES)}; retrain on the engine's features"
            ) from None
        estimator = load_skops(d / SKOPS_NAME)
        model = cls(
            version=str(meta["version"]),
            created=str(meta["created"]),
            estimator=estimator,
            metrics=json_object(meta, "metrics", d / META_NAME),
            training=json_object(meta, "training", d / META_NAME),
            feature_names=names,
        )
        model.probe()
        return model


def load_skops(path: Path) -> Any:
    """A skops file's object, built from default-trusted types plus `TRUSTED_TYPES` only, once
    its members are known to inflate to at most MAX_SKOPS_BYTES with honest .npy headers
    (`models.artifacts.check_zip_members`)."""
    check_zip_members(
        path,
        MAX_SKOPS_BYTES,
        "skops file (pickles and other formats are refused; save the estimator with skops.io.dump)",
    )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception:
        raise ModelLoadError(
            f"{path} is not a skops file (pickles and other formats are refused; save the "
            "estimator with skops.io.dump)"
        ) from None
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ModelLoadError(
            f"{path} needs types outside the trusted list: {', '.join(refused)} "
            "(see models.sklearn_churn.TRUSTED_TYPES)"
        )
    try:
        return sio.loads(data, trusted=list(untrusted))
    except Exception as exc:
        raise ModelLoadError(f"{path}: skops could not load it: {exc}") from None


def train_gbm_churn(
    events: Any, horizon_days: int = 90, cutoff_ms: int | None = None
) -> SklearnChurnModel:
    """A gradient-boosted churn model (scikit-learn HistGradientBoosting) on the engine's raw
    features, with the same labels and held-out AUC as `models.churn.train_churn`."""
    return train_gbm_churn_on(churn_dataset(events, horizon_days, cutoff_ms), horizon_days)


def train_gbm_churn_on(data: ChurnDataset, horizon_days: int) -> SklearnChurnModel:
    """`train_gbm_churn` of a `models.churn.ChurnDataset` built already (from a file:
    models/churn_stream.py)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from models.artifacts import make_version, rfc3339, utc_now
    from models.churn import _held_out_split

    x = np.sign(data.x) * np.expm1(np.abs(data.x))  # back to raw features: what serving passes
    y = data.y

    def fit(xs: np.ndarray, ys: np.ndarray) -> Any:
        return HistGradientBoostingClassifier(**GBM_PARAMS).fit(xs, ys)

    metrics: dict[str, Any] = {"n_users": len(data.users), "horizon_days": horizon_days}
    test = _held_out_split(data.users)
    if len(set(y[test].tolist())) == 2 and len(set(y[~test].tolist())) == 2:
        proba = fit(x[~test], y[~test]).predict_proba(x[test])[:, 1]
        metrics["roc_auc"] = round(float(roc_auc_score(y[test], proba)), 4)
        metrics["n_test_users"] = int(test.sum())
    estimator = fit(x, y)
    when = utc_now()
    return SklearnChurnModel(
        version=make_version("churn", when, sio.dumps(estimator)),
        created=rfc3339(when),
        estimator=estimator,
        metrics=metrics,
        training={"events": "engine fold up to the cut-off", "params": GBM_PARAMS},
    )


GBM_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 200,
    "max_depth": 3,
    "min_samples_leaf": 30,
    "l2_regularization": 1.0,
    "random_state": 0,
}
