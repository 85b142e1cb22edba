"""The embedding recommender's vector index (models/vector_index.py, issue 21 item 3): exact below
EXACT_BELOW and with every cluster probed, the vectors kept once and saved as given, and a model
swapped out of the content service is garbage."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

from api.content import ContentService
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from models import vector_index
from models.artifacts import ModelLoadError
from models.bundle import load_model, save_model
from models.embedding import EmbeddingRecommender
from models.registry import ModelSet
from tests.models.synthetic import T0, view

N = 3_000


def _vectors(n: int = N, seed: int = 3) -> np.ndarray:
    """Clustered vectors with uneven norms (as ALS factors are)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, 16)).astype(np.float32)
    noise = 0.5 * rng.standard_normal((n, 16)).astype(np.float32)
    norms = rng.lognormal(0.0, 0.5, (n, 1)).astype(np.float32)
    return ((centres[rng.integers(0, 40, n)] + noise) * norms).astype(np.float32)


def _model(vectors: np.ndarray, **kw: object) -> EmbeddingRecommender:
    items = [f"i{j:05d}" for j in range(len(vectors))]
    args: dict[str, object] = {"version": "recs-x", "created": "x", "items": items}
    args.update({"vectors": vectors, "popular": items[:30], **kw})
    return EmbeddingRecommender(**args)  # type: ignore[arg-type]


def _histories(n: int = N, users: int = 40) -> list[list[tuple[str, int]]]:
    rng = np.random.default_rng(5)
    return [
        [(f"i{j:05d}", T0 - r) for r, j in enumerate(rng.integers(0, n, 4).tolist())]
        for _ in range(users)
    ]


@pytest.fixture
def indexed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_index, "EXACT_BELOW", 1_000)  # N items get clusters


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_every_cluster_probed_is_the_exact_answer(indexed: None, similarity: str) -> None:
    vectors = _vectors()
    indexed_model = _model(vectors.copy(), similarity=similarity)
    assert indexed_model._ivf.lists > 1 and indexed_model._ivf.lists == round(N**0.5)
    indexed_model.probes = indexed_model._ivf.lists
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vector_index, "EXACT_BELOW", 10**9)
        exact = _model(vectors.copy(), similarity=similarity)
    assert exact._ivf.lists == 1
    for history in _histories():
        assert indexed_model.recommend(history, set(), 20) == exact.recommend(history, set(), 20)
        # a history item is scored without its own vector, with or without the index
        assert (
            indexed_model.recommend(history, set(), 50)[:20]
            == exact.recommend(history, set(), 50)[:20]
        )
    item = "i00007"
    assert indexed_model.neighbours_of(item) == exact.neighbours_of(item)


def test_probing_a_few_clusters_finds_most_of_the_exact_top(
    indexed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_index, "SCAN_ROWS", 16 * N // 55)  # 16 of the 55 clusters
    model = _model(_vectors())
    assert model.probes == 16
    got = [model.recommend(h, set(), 20) for h in _histories()]
    model.probes = model._ivf.lists
    exact = [model.recommend(h, set(), 20) for h in _histories()]
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(got, exact, strict=True)])
    assert overlap >= 0.9  # 16 of 55 clusters probed (+ the own); this seed measures ~0.99
    assert all(len(a) == 20 for a in got)


def test_the_vectors_are_kept_once_and_saved_as_given(indexed: None, tmp_path: Path) -> None:
    vectors = _vectors()
    model = _model(vectors.copy(), similarity="cosine")
    assert not hasattr(model, "vectors")  # only the index's copy (grouped by cluster)
    assert np.array_equal(model.item_vectors(), vectors)
    loaded = load_model(save_model(model, tmp_path / "emb"))
    assert isinstance(loaded, EmbeddingRecommender)
    assert np.array_equal(loaded.item_vectors(), vectors)
    history = _histories()[0]
    assert loaded.recommend(history, set(), 20) == model.recommend(history, set(), 20)


def test_small_models_keep_the_given_array_without_a_copy() -> None:
    vectors = _vectors(200)
    model = _model(vectors)
    assert model._ivf.lists == 1 and model._ivf.store is vectors


def test_a_swapped_out_model_is_garbage() -> None:
    state = MemoryState()
    for j, item in enumerate(["i00001", "i00002", "i00003"]):
        state.apply(view("u1", item, T0 + j))
    default = ModelSet.default()
    old = _model(_vectors(500, seed=1), version="recs-old")
    content = ContentService(state, ModelSet(default.churn, old), Renderer(), BlockPolicy())
    profile = state.profile("u1")
    assert profile is not None
    assert content.scores(profile).models["recs"] == "recs-old"  # served by it, and cached
    gone = weakref.ref(old)
    content.models = ModelSet(default.churn, _model(_vectors(500, seed=2), version="recs-new"))
    del old
    assert content.scores(profile).models["recs"] == "recs-new"
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("kind", ["embedding", "item_knn"])
@pytest.mark.parametrize("damage", ["truncated", "not a zip"])
def test_a_damaged_npz_is_refused_with_a_reason(tmp_path: Path, kind: str, damage: str) -> None:
    if kind == "embedding":
        d = save_model(_model(_vectors(300)), tmp_path / "m")
    else:
        d = save_model(ModelSet.default().recs, tmp_path / "m")
    npz = d / "recs.npz"
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PK\x03\x04" + data[9:])
    with pytest.raises(ModelLoadError, match="not a valid"):
        load_model(d)
