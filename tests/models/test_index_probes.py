"""Which clusters the vector index probes and how it scores them (models/vector_index.py, issue 21
item 3): a cluster is ranked by its centroid's score times its longest vector, and the scan of
the probed clusters scores each of their rows as the whole matrix would."""

from __future__ import annotations

import numpy as np
import pytest

from models import vector_index


@pytest.fixture(autouse=True)
def clustered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_index, "EXACT_BELOW", 10)  # the small fixtures get clusters


def _at(degrees: float, norm: float) -> list[float]:
    return [norm * np.cos(np.radians(degrees)), norm * np.sin(np.radians(degrees))]


def _two_clusters() -> tuple[np.ndarray, vector_index.Layout]:
    """Cluster 0: short vectors along the x axis; cluster 1: long vectors 30 degrees off it."""
    short = [_at(a, 1.0) for a in (-4, -2, 0, 2, 4, 6)]
    long = [_at(a, 5.0) for a in (26, 28, 30, 32, 34, 36)]
    vectors = np.array(short + long, np.float32)
    centroids = np.array([_at(1, 0.99), _at(31, 0.99)], np.float32)
    assign = np.array([0] * len(short) + [1] * len(long), np.int32)
    return vectors, (centroids, assign)


def test_a_cluster_of_long_vectors_a_little_off_the_query_is_probed_first() -> None:
    vectors, layout = _two_clusters()
    index = vector_index.build(vectors, cosine=False, layout=layout)
    query = np.array([1.0, 0.0], np.float32)
    assert float((index.centroids @ query)[0]) > float((index.centroids @ query)[1])
    rows, scores = index.search(query, probes=1)
    best = int(index.order[rows[np.argmax(scores)]])
    assert best == int(np.argmax(vectors @ query))  # a long vector at 30 degrees: 4.3 against 1
    assert sorted(index.order[rows].tolist()) == list(range(6, 12))


def test_under_cosine_every_filled_cluster_reaches_one() -> None:
    vectors, layout = _two_clusters()
    index = vector_index.build(vectors, cosine=True, layout=layout)
    assert index.reach.tolist() == [1.0, 1.0]
    rows, _ = index.search(np.array([1.0, 0.0], np.float32), probes=1)
    assert sorted(index.order[rows].tolist()) == list(range(6))  # the nearer direction wins


@pytest.mark.parametrize("cosine", [False, True])
def test_the_scan_scores_every_row_of_the_probed_clusters_as_the_whole_matrix(
    cosine: bool,
) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    lists = 12
    assign = rng.integers(0, lists - 1, 300).astype(np.int32)  # the last cluster stays empty
    centroids = rng.standard_normal((lists, 8)).astype(np.float32)
    index = vector_index.build(vectors, cosine, layout=(centroids, assign))
    assert index.reach[-1] == 0.0 and (index.reach[:-1] > 0).all()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if cosine else vectors
    longest = [np.linalg.norm(unit[assign == c], axis=1).max() for c in range(lists - 1)] + [0]
    for seed in range(20):
        query = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
        near = np.array([seed, 299 - seed])
        rows, scores = index.search(query, probes=3, near=near)
        items = index.order[rows]
        ranked = np.argsort(-(centroids @ query) * np.array(longest))[:3]
        clusters = set(ranked.tolist()) | set(assign[near].tolist())
        assert np.array_equal(rows, np.sort(rows)) and len(set(rows.tolist())) == len(rows)
        assert sorted(items.tolist()) == [i for i in range(300) if assign[i] in clusters]
        np.testing.assert_allclose(scores, (unit @ query)[items], rtol=1e-5, atol=1e-5)


def test_a_query_probes_as_many_clusters_as_hold_the_scan_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((300, 4)).astype(np.float32)
    layout = (rng.standard_normal((12, 4)).astype(np.float32), np.arange(300) % 12)
    index = vector_index.build(vectors, False, layout=layout)  # 12 clusters of 25 rows
    for rows, probes in ((50, 2), (60, 2), (250, 10), (10**6, 12), (1, 1)):
        monkeypatch.setattr(vector_index, "SCAN_ROWS", rows)
        assert index.probes() == probes
