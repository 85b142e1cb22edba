"""The embedding artifact stores its index's layout (issue 21 item 3): loading rebuilds the same
index without clustering again; artifacts without it (format 1) still load, building it; a
hostile layout is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import vector_index
from models.artifacts import ModelLoadError
from models.embedding import EmbeddingRecommender
from tests.models.test_vector_index import N, _histories, _model, _vectors


@pytest.fixture
def indexed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_index, "EXACT_BELOW", 1_000)  # N items get clusters


def no_clustering(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> np.ndarray:
        raise AssertionError("clustered again at load")

    monkeypatch.setattr(vector_index, "_kmeans", refuse)
    monkeypatch.setattr(vector_index, "_assign", refuse)


def same_index(a: EmbeddingRecommender, b: EmbeddingRecommender) -> None:
    for name in ("store", "order", "where", "bounds", "centroids"):
        assert np.array_equal(getattr(a._ivf, name), getattr(b._ivf, name)), name


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_a_saved_index_loads_without_clustering_again(
    indexed: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, similarity: str
) -> None:
    model = _model(_vectors(), similarity=similarity)
    model.save(tmp_path)
    assert json.loads((tmp_path / "recs.json").read_text())["format"] == 2
    with np.load(tmp_path / "recs.npz") as npz:
        assert sorted(npz.files) == ["ivf_assign", "ivf_centroids", "popular", "vectors"]
    no_clustering(monkeypatch)
    loaded = EmbeddingRecommender.load(tmp_path)
    same_index(loaded, model)
    for history in _histories():
        assert loaded.recommend(history, set(), 20) == model.recommend(history, set(), 20)


def test_a_format_1_artifact_still_loads_by_building_its_index(
    indexed: None, tmp_path: Path
) -> None:
    model = _model(_vectors())
    model.save(tmp_path)
    meta = json.loads((tmp_path / "recs.json").read_text())
    (tmp_path / "recs.json").write_text(json.dumps({**meta, "format": 1}))
    with np.load(tmp_path / "recs.npz") as npz:
        np.savez_compressed(tmp_path / "recs.npz", vectors=npz["vectors"], popular=npz["popular"])
    same_index(EmbeddingRecommender.load(tmp_path), model)


def test_an_exact_model_keeps_the_format_1_artifact(tmp_path: Path) -> None:
    _model(_vectors()).save(tmp_path)  # N < EXACT_BELOW: one cluster, nothing to store
    assert json.loads((tmp_path / "recs.json").read_text())["format"] == 1
    with np.load(tmp_path / "recs.npz") as npz:
        assert sorted(npz.files) == ["popular", "vectors"]


@pytest.mark.parametrize(
    ("centroids", "assign", "says"),
    [
        (np.zeros((4, 3), np.float32), np.zeros(N, np.int64), "float32 lists x 16"),
        (np.full((4, 16), np.nan, np.float32), np.zeros(N, np.int64), "finite"),
        (np.zeros((4, 16), np.float32), np.full(N, 4, np.int64), "outside 0..3"),
        (np.zeros((4, 16), np.float32), np.zeros(N - 1, np.int64), "one integer per item"),
        (np.zeros((4, 16), np.float32), np.zeros(N, np.float32), "one integer per item"),
    ],
)
def test_a_hostile_layout_is_refused(
    indexed: None, tmp_path: Path, centroids: np.ndarray, assign: np.ndarray, says: str
) -> None:
    _model(_vectors()).save(tmp_path)
    with np.load(tmp_path / "recs.npz") as npz:
        vectors, popular = npz["vectors"], npz["popular"]
    np.savez_compressed(tmp_path / "recs.npz", vectors=vectors, popular=popular,
                        ivf_centroids=centroids, ivf_assign=assign)  # fmt: skip
    with pytest.raises(ModelLoadError, match=says):
        EmbeddingRecommender.load(tmp_path)
