"""Calibration of the churn model (Platt scaling folded into the artifact) and the feature subset
an older artifact may carry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from engine.features import FEATURE_NAMES, log_scale
from models.churn import (
    ChurnModel,
    churn_dataset,
    fit_calibrated,
    fit_linear,
    platt,
    train_churn,
)
from tests.models.synthetic import churn_events


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores' log-odds, labels): labels drawn from sigmoid(z), scores overconfident (3 z + 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return 3 * z + 1, y


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-z)))


def test_platt_repairs_a_miscalibrated_score_on_new_users() -> None:
    fit_logits, fit_y = _miscalibrated(20_000, seed=1)
    test_logits, test_y = _miscalibrated(20_000, seed=2)
    slope, offset = platt(fit_logits, fit_y)
    assert slope == pytest.approx(1 / 3, abs=0.05) and offset == pytest.approx(-1 / 3, abs=0.1)
    before = brier_score_loss(test_y, _sigmoid(test_logits))
    after = brier_score_loss(test_y, _sigmoid(slope * test_logits + offset))
    assert after < before - 0.01


def test_calibrated_scores_keep_the_order_of_the_raw_scores() -> None:
    data = churn_dataset(churn_events(), horizon_days=90)
    calibrated, info = fit_calibrated(data.x, data.y)
    raw = fit_linear(data.x, data.y)
    assert info["method"] == "platt" and info["slope"] > 0
    grid = np.random.default_rng(3).normal(size=(500, data.x.shape[1])) * 2
    order = np.argsort(raw.logits(grid), kind="stable")
    assert np.all(np.diff(calibrated.proba(grid)[order]) >= 0)


def test_too_few_users_a_class_leave_the_scores_uncalibrated() -> None:
    data = churn_dataset(churn_events(), horizon_days=90)
    keep = np.r_[np.flatnonzero(data.y == 0)[:3], np.flatnonzero(data.y == 1)[:40]]
    model, info = fit_calibrated(data.x[keep], data.y[keep])
    assert info["method"] == "none"
    raw = fit_linear(data.x[keep], data.y[keep])
    assert np.allclose(model.logits(data.x), raw.logits(data.x))


def test_the_artifact_carries_the_calibration(tmp_path: Path) -> None:
    events = churn_events()
    model = train_churn(events, horizon_days=90)
    data = churn_dataset(events, horizon_days=90)
    assert model.metrics["calibration"]["method"] == "platt"
    assert 0 <= model.metrics["brier"] < 0.25
    loaded = ChurnModel.load(model.save(tmp_path / "churn.json"))
    raw = np.sign(data.x) * np.expm1(np.abs(data.x))
    expected = fit_calibrated(data.x, data.y)[0].proba(data.x)
    assert np.allclose(loaded.score_batch(raw), expected, atol=1e-9)


def test_an_artifact_on_fewer_features_scores_the_engines_vector(tmp_path: Path) -> None:
    model = train_churn(churn_events(), horizon_days=90)
    older = model.to_dict()
    n = len(FEATURE_NAMES) - 2  # trained before the last two features existed
    for key in ("feature_names", "mean", "scale", "coef"):
        older[key] = older[key][:n]
    path = tmp_path / "churn.json"
    path.write_text(json.dumps(older))
    loaded = ChurnModel.load(path)
    vec = [float(i + 1) for i in range(len(FEATURE_NAMES))]
    numbers = (older["mean"], older["scale"], older["coef"])
    z = sum((x - m) / s * c for x, m, s, c in zip(log_scale(vec[:n]), *numbers, strict=True))
    expected = 1 / (1 + np.exp(-(z + older["intercept"])))
    assert loaded.score(vec) == pytest.approx(expected, abs=1e-12)
    assert loaded.score_batch(np.array([vec]))[0] == pytest.approx(expected, abs=1e-12)


def test_a_skops_model_on_fewer_features_scores_the_engines_vector(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from models.sklearn_churn import SklearnChurnModel

    data = churn_dataset(churn_events(), horizon_days=90)
    n = len(FEATURE_NAMES) - 2
    raw = np.sign(data.x) * np.expm1(np.abs(data.x))
    estimator = HistGradientBoostingClassifier(max_iter=20).fit(raw[:, :n], data.y)
    model = SklearnChurnModel("churn-old", "2026-01-01T00:00:00Z", estimator)
    model.feature_names = FEATURE_NAMES[:n]
    SklearnChurnModel.save(model, tmp_path)
    loaded = SklearnChurnModel.load(tmp_path)
    assert loaded.feature_names == FEATURE_NAMES[:n]
    expected = estimator.predict_proba(raw[:, :n])[:, 1]
    assert np.allclose(loaded.score_batch(raw), expected)
    assert loaded.score(raw[0].tolist()) == pytest.approx(expected[0])


def test_a_feature_constant_in_training_keeps_scale_one() -> None:
    data = churn_dataset(churn_events(), horizon_days=90)
    x = data.x.copy()
    tenure = FEATURE_NAMES.index("tenure_days")
    x[:, tenure] = 5.0 + np.arange(len(x)) * 1e-9  # everyone started together, a ms apart
    model = fit_linear(x, data.y)
    assert model.scale[tenure] == 1.0
    later = x.copy()
    later[:, tenure] += 0.5  # the same users a few months on
    assert np.ptp(model.logits(later) - model.logits(x)) < 1e-9  # a shift, the same for all
    assert np.all(np.abs(model.logits(later) - model.logits(x)) < 1.0)
