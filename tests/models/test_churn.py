from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from engine.features import FEATURE_NAMES, features
from engine.profile import fold
from models.artifacts import ModelLoadError
from models.churn import ChurnModel, churn_dataset, train_churn
from tests.models.synthetic import DAY, T0, churn_events


@pytest.fixture(scope="module")
def model() -> ChurnModel:
    return train_churn(churn_events(), horizon_days=90)


def test_labels_follow_the_horizon() -> None:
    data = churn_dataset(churn_events(), horizon_days=90)
    labels = dict(zip(data.users, data.y.tolist(), strict=True))
    assert labels["u0"] == 0  # loyal: buys after the cut-off
    assert labels["u1"] == 1  # lapsed
    assert data.x.shape == (200, len(FEATURE_NAMES))


def test_training_separates_and_reports(model: ChurnModel) -> None:
    assert model.name == "churn"
    assert model.version.startswith("churn-")
    assert model.created.endswith("Z")
    assert model.feature_names == FEATURE_NAMES
    assert model.metrics["n_users"] == 200
    assert 0.4 < model.metrics["positive_rate"] < 0.6
    assert model.metrics["roc_auc"] > 0.9
    events = churn_events()
    now = churn_dataset(events).cutoff_ms
    loyal = fold([e for e in events if e.user_id == "u0" and e.ts < now])
    lapsed = fold([e for e in events if e.user_id == "u1" and e.ts < now])
    assert loyal is not None and lapsed is not None
    assert model.score(features(lapsed, now)) > 0.5 > model.score(features(loyal, now))


def test_score_batch_matches_score(model: ChurnModel) -> None:
    rng = np.random.default_rng(1)
    matrix = rng.uniform(0, 50, size=(17, len(FEATURE_NAMES)))
    batch = model.score_batch(matrix)
    assert batch.shape == (17,)
    assert np.all((batch >= 0) & (batch <= 1))
    for row, value in zip(matrix, batch, strict=True):
        assert model.score(row.tolist()) == pytest.approx(float(value), abs=1e-12)
    with pytest.raises(ValueError):
        model.score([1.0, 2.0])


def test_round_trip(model: ChurnModel, tmp_path: Path) -> None:
    path = model.save(tmp_path / "churn.json")
    loaded = ChurnModel.load(path)
    assert loaded == model
    vec = [3.0] * len(FEATURE_NAMES)
    assert loaded.score(vec) == model.score(vec)


def test_loader_rejects_wrong_feature_names(model: ChurnModel, tmp_path: Path) -> None:
    path = tmp_path / "churn.json"
    for names in (["a"] * len(FEATURE_NAMES), list(reversed(FEATURE_NAMES))):
        path.write_text(json.dumps({**model.to_dict(), "feature_names": names}))
        with pytest.raises(ModelLoadError, match="trained on features"):
            ChurnModel.load(path)


def test_loader_rejects_pickles_and_junk(model: ChurnModel, tmp_path: Path) -> None:
    pickled = tmp_path / "churn.pkl"
    pickled.write_bytes(pickle.dumps(model.to_dict()))
    with pytest.raises(ModelLoadError, match="not a JSON churn artifact"):
        ChurnModel.load(pickled)
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2, 3]")
    with pytest.raises(ModelLoadError):
        ChurnModel.load(junk)
    with pytest.raises(ModelLoadError):
        ChurnModel.load(tmp_path / "missing.json")


def test_needs_both_classes() -> None:
    events = [e for e in churn_events() if e.user_id in {"u1", "u3"}]
    with pytest.raises(ValueError):
        train_churn(events, cutoff_ms=T0 + 300 * DAY)


@pytest.mark.parametrize(
    ("field", "value"),
    [("coef", float("nan")), ("coef", float("inf")), ("mean", float("-inf")), ("intercept", 0.0)],
)
def test_loader_rejects_non_finite_numbers(
    model: ChurnModel, tmp_path: Path, field: str, value: float
) -> None:
    """JSON's NaN/Infinity loaded as floats: every user's churn score became NaN (the profile's
    `scores.churn` out of 0..1, and `NaN` in its JSON)."""
    data = model.to_dict()
    if field == "intercept":
        data["intercept"] = float("nan")
    else:
        data[field] = [value, *data[field][1:]]
    path = tmp_path / "churn.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="finite"):
        ChurnModel.load(path)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format": ' + "9" * 5000 + "}"])
def test_loader_rejects_json_too_deep_or_too_long_a_number(tmp_path: Path, text: str) -> None:
    path = tmp_path / "churn.json"
    path.write_text(text)
    with pytest.raises(ModelLoadError):
        ChurnModel.load(path)
