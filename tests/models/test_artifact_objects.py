"""An artifact's `metrics`/`training` that are no JSON object, and a churn artifact's
`feature_names` that are no list, are refused with a ModelLoadError naming them: `dict([1])`,
`dict("ab")` and `tuple(5)` raised TypeError or ValueError out of the loaders, which the worker's
registry (`streams.registry._servable`, catching ModelLoadError) and `persona models` (a
traceback for a TypeError) did not expect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.features import FEATURE_NAMES
from models.artifacts import ModelLoadError
from models.bundle import load_model, read_bundle
from models.registry import DEFAULT_DIR
from tests.models.test_hostile_artifacts import emb_dir, knn_dir

NOT_OBJECTS = [[1], "ab", 5, True]


def _change(path: Path, **change: Any) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | change))


def _refused(directory: Path, name: str) -> None:
    for load in (load_model, read_bundle):
        with pytest.raises(ModelLoadError, match=name):
            load(directory)


@pytest.mark.parametrize("metrics", NOT_OBJECTS)
def test_item_knn_metrics_that_are_no_object_are_refused(tmp_path: Path, metrics: Any) -> None:
    d = knn_dir(tmp_path)
    _change(d / "recs.json", metrics=metrics)
    _refused(d, "metrics")


@pytest.mark.parametrize("name", ["metrics", "training"])
@pytest.mark.parametrize("value", NOT_OBJECTS)
def test_embedding_metrics_and_training_that_are_no_object_are_refused(
    tmp_path: Path, name: str, value: Any
) -> None:
    d = emb_dir(tmp_path, ["a", "b", "c"])
    _change(d / "recs.json", **{name: value})
    _refused(d, name)


@pytest.mark.parametrize(
    ("name", "value"),
    [("metrics", [1]), ("metrics", "ab"), ("feature_names", 5), ("feature_names", None)],
)
def test_churn_fields_of_the_wrong_kind_are_refused(tmp_path: Path, name: str, value: Any) -> None:
    d = tmp_path / "churn"
    d.mkdir()
    (d / "churn.json").write_bytes((DEFAULT_DIR / "churn.json").read_bytes())
    _change(d / "churn.json", **{name: value})
    _refused(d, name)


def _sklearn_dir(tmp_path: Path) -> Path:
    from sklearn.linear_model import LogisticRegression

    from models.sklearn_churn import SklearnChurnModel

    rng = np.random.default_rng(1)
    x = rng.random((40, len(FEATURE_NAMES)))
    estimator = LogisticRegression().fit(x, np.arange(40) % 2)
    model = SklearnChurnModel("churn-sk", "2026-01-01T00:00:00Z", estimator)
    return SklearnChurnModel.save(model, tmp_path / "sk")


@pytest.mark.parametrize(
    ("name", "value"),
    [("metrics", [1]), ("training", "ab"), ("feature_names", 5), ("feature_names", None)],
)
def test_sklearn_churn_fields_of_the_wrong_kind_are_refused(
    tmp_path: Path, name: str, value: Any
) -> None:
    d = _sklearn_dir(tmp_path)
    _change(d / "churn.json", **{name: value})
    _refused(d, name)


def test_objects_and_absent_ones_still_load(tmp_path: Path) -> None:
    d = knn_dir(tmp_path)
    _change(d / "recs.json", metrics={"hr@10": 0.5})
    assert load_model(d).metrics == {"hr@10": 0.5}
    e = emb_dir(tmp_path, ["a", "b"])
    _change(e / "recs.json", metrics=None, training={})
    assert load_model(e).metrics == {}
    s = _sklearn_dir(tmp_path)
    assert load_model(s).name == "churn"
