"""The embedding-table recommender: artifact round trip, scoring, refusals, registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.artifacts import ModelLoadError
from models.bundle import load_model, read_bundle, save_model
from models.embedding import EmbeddingRecommender
from models.recs import recency_weights
from models.registry_log import RegistryLog, bundle_records
from streams.registry import activation
from tests.models.synthetic import T0, basket_events

ITEMS = ["a", "a2", "b", "b2", "c", "pop", "pop2"]


def table(**kw: object) -> EmbeddingRecommender:
    """a~a2, b~b2 (two directions), c alone; pop/pop2 only reached through the popular fill."""
    vectors = np.array(
        [[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 0.9, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]],
        dtype=np.float32,
    )
    args: dict[str, object] = {
        "version": "recs-20260101T0000-00000000",
        "created": "2026-01-01T00:00:00Z",
        "items": ITEMS,
        "vectors": vectors,
        "popular": ["pop", "pop2", "c"],
    }
    args.update(kw)
    return EmbeddingRecommender(**args)  # type: ignore[arg-type]


def test_recency_weights_share_a_rank_per_time_stamp() -> None:
    recent = [("x", 30), ("y", 20), ("z", 20), ("w", 10)]
    assert recency_weights(recent, 0.5) == [1.0, 0.5, 0.5, 0.25]
    assert recency_weights([], 0.5) == []


def test_recency_weighting_and_own_contribution() -> None:
    model = table()
    newest_b = model.recommend([("b", T0 + 2), ("a", T0 + 1)], exclude=set(), k=4)
    assert newest_b.index("b2") < newest_b.index("a2")
    newest_a = model.recommend([("a", T0 + 2), ("b", T0 + 1)], exclude=set(), k=4)
    assert newest_a.index("a2") < newest_a.index("b2")
    # a recent item is not recommended on the strength of its own vector
    assert model.recommend([("a", T0)], exclude=set(), k=1) == ["a2"]


def test_exclusions_filters_and_popular_fill() -> None:
    model = table()
    out = model.recommend([("a", T0)], exclude={"pop"}, k=5, allowed=lambda i: i != "b2")
    assert out == ["a2", "pop2", "c"]  # positive scores first, then the popular fill
    out = model.recommend([("a", T0)], exclude={"a2", "pop"}, k=5, allowed=lambda i: i != "b2")
    assert out == ["pop2", "c"]
    assert model.recommend([], exclude=set(), k=2) == ["pop", "pop2"]
    assert model.recommend([("unknown", T0)], exclude={"pop"}, k=1) == ["pop2"]
    assert model.popular_items(1, allowed=lambda i: i != "pop") == ["pop2"]
    assert model.neighbours_of("a")[0][0] == "a2" and model.neighbours_of("nope") == []
    cosine = table(similarity="cosine")
    assert cosine.recommend([("a", T0)], exclude=set(), k=1) == ["a2"]


def test_round_trip_and_publishable(tmp_path: Path) -> None:
    model = table(recency_decay=0.6)
    d = save_model(model, tmp_path / "emb")
    assert sorted(p.name for p in d.iterdir()) == ["recs.json", "recs.npz"]
    loaded = load_model(d)
    assert isinstance(loaded, EmbeddingRecommender)
    assert loaded.recency_decay == 0.6 and loaded.popular == model.popular
    recent = [("b", T0 + 5), ("a", T0)]
    assert loaded.recommend(recent, set(), 6) == model.recommend(recent, set(), 6)
    bundle = read_bundle(d)
    assert (bundle.name, bundle.kind, bundle.version) == ("recs", "embedding", model.version)


def _write(d: Path, meta: dict[str, object], **arrays: np.ndarray) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "recs.json").write_text(json.dumps(meta))
    np.savez(d / "recs.npz", **arrays)  # type: ignore[arg-type]
    return d


@pytest.mark.parametrize(
    ("change", "arrays", "message"),
    [
        ({}, {"vectors": np.ones((3, 2), np.float64)}, "float32"),
        ({}, {"vectors": np.ones((2, 2), np.float32)}, "3 items, the vectors in recs.npz are of 2"),
        ({}, {"vectors": np.ones(3, np.float32)}, "3 x dim"),
        ({}, {"vectors": np.array([[1, 0], [np.nan, 0], [0, 1]], np.float32)}, "NaN"),
        ({}, {"popular": np.array([0, 7], np.int32)}, "outside"),
        ({}, {"popular": np.array([0, 0], np.int32)}, "repeat"),
        ({}, {"popular": np.array([0.5])}, "integer"),
        ({}, {"extra": np.zeros(1)}, "only the arrays vectors, popular, not 'extra.npy'"),
        ({"items": ["x", "x", "y"]}, {}, "unique"),
        ({"kind": "word2vec"}, {}, "unknown recs kind"),
        ({"similarity": "euclid"}, {}, "similarity"),
        ({"recency_decay": 3}, {}, "recency_decay"),
    ],
)
def test_bad_artifacts_are_refused(
    tmp_path: Path, change: dict[str, object], arrays: dict[str, np.ndarray], message: str
) -> None:
    meta: dict[str, object] = {"format": 1, "name": "recs", "kind": "embedding"}
    meta["items"] = ["x", "y", "z"]
    meta.update(change)
    good = {"vectors": np.eye(3, 2, dtype=np.float32), "popular": np.array([1, 0], np.int32)}
    d = _write(tmp_path / "bad", meta, **{**good, **arrays})
    with pytest.raises(ModelLoadError, match=message):
        read_bundle(d)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    meta = {"format": 1, "name": "recs", "kind": "embedding", "items": ["x"]}
    objects = np.array([{"evil": 1}], dtype=object)
    d = _write(tmp_path / "pkl", meta, vectors=objects, popular=np.array([0], np.int32))
    with pytest.raises(ModelLoadError, match="vectors holds objects"):
        read_bundle(d)


def test_registry_publishes_and_activates_an_embedding(tmp_path: Path) -> None:
    d = save_model(table(version="", created=""), tmp_path / "emb")  # version filled in
    bundle = read_bundle(d)
    assert bundle.kind == "embedding" and bundle.version.startswith("recs-")
    state = RegistryLog(tmp_path / "cache")
    default = state.active("recs")
    for key, value in bundle_records(bundle):
        state.apply(key, value)
    listed = {m["version"]: m for m in state.listing()}
    assert listed[bundle.version]["active"] is False
    assert state.apply(*activation(state, "recs", bundle.version)) == "active"
    assert state.active("recs") == bundle.version and state.history("recs") == [default]
    model = state.load(bundle.version)
    assert isinstance(model, EmbeddingRecommender)
    assert model.recommend([("a", T0)], set(), 1) == ["a2"]


def test_trains_from_implicit_als(tmp_path: Path) -> None:
    pytest.importorskip("implicit")
    from models.embedding import train_als_recs

    model = train_als_recs(basket_events(), factors=8, iterations=5)
    assert model.item_vectors().dtype == np.float32 and model.item_vectors().shape[1] == 8
    assert model.popular[:2] == ["pop", "pop2"]
    d = save_model(model, tmp_path / "als")
    assert read_bundle(d).kind == "embedding"
    loaded = load_model(d)
    assert isinstance(loaded, EmbeddingRecommender)
    out = loaded.recommend([("a", T0)], {"pop", "pop2"}, 3)
    assert len(out) == 3 and "a" not in out[:1]
