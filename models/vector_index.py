"""An inverted-file (IVF) index over item vectors, in numpy: what lets the embedding recommender
answer without scoring the whole item matrix (issue 21 item 3).

`build` clusters the vectors' directions with a few rounds of spherical k-means (on a sample;
then every row is given its nearest centroid) and keeps ONE copy of the vectors, its rows grouped
by cluster, so that a cluster is a contiguous slice. `search` scores the centroids against the
query (each times its cluster's longest vector) and then only the rows of the `probes` best
clusters, plus the clusters of a few given rows
(the user's heaviest history items). Below `EXACT_BELOW` items there is a single cluster: the
search is exact and the vectors are not copied.

The result is approximate above that size: an item in a cluster not probed is not seen.
benchmarks/embedding_latency.py measures its recall@10 of the exact answer and its latency
against the exact path's (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXACT_BELOW = 50_000  # items: fewer are scored exactly (one cluster, ~1 ms at dim 64)
SCAN_ROWS = 16_000  # rows the probed clusters hold on average: 16 of 1,000 clusters at 1M items
KMEANS_ROUNDS = 8
SAMPLE_PER_LIST = 64  # k-means trains on this many rows per cluster (at most)
CHUNK = 16_384  # rows given their centroid at a time (bounds the distance matrix: 64 MB at 1k)


Layout = tuple[np.ndarray, np.ndarray]  # centroids (lists x dim), each item row's cluster


@dataclass(frozen=True)
class VectorIndex:
    store: np.ndarray  # float32 n x dim, rows grouped by cluster
    order: np.ndarray  # int64 n: store row p holds item row order[p]
    where: np.ndarray  # int64 n: item row i is store row where[i]
    bounds: np.ndarray  # int64 lists+1: cluster c is store rows bounds[c]:bounds[c+1]
    centroids: np.ndarray  # float32 lists x dim
    scale: np.ndarray | None  # float32 n (store order): 1/norm for cosine, None for dot
    reach: np.ndarray  # float32 lists: the longest scored vector of each cluster (0 if empty)

    @property
    def lists(self) -> int:
        return len(self.bounds) - 1

    def item_vectors(self) -> np.ndarray:
        """The vectors as given, in item-row order (a copy unless exact)."""
        return self.store if self.lists == 1 else self.store[self.where]

    def unit(self, rows: np.ndarray) -> np.ndarray:
        """The scored vectors of item rows (L2-normalized for cosine)."""
        p = self.where[rows]
        v: np.ndarray = self.store[p]
        return v if self.scale is None else v * self.scale[p, None]

    def search(
        self, query: np.ndarray, probes: int, near: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(store rows ascending, scores) of the rows of the `probes` best clusters
        (`best_clusters`), and of the clusters of the item rows `near` (a user's heaviest history
        items: their own neighbourhoods, which a centroid between them can miss)."""
        if self.lists == 1:
            return np.arange(len(self.store)), self._score(0, len(self.store), query)
        best = self.best_clusters(query, probes)
        if near is not None and len(near):
            best = np.concatenate([best, self.cluster(near)])
        return self._scan(np.unique(best), query)

    def probes(self) -> int:
        """How many clusters a query probes: as many as hold `SCAN_ROWS` rows on average (16 of
        1,000 at 1M items, 51 of 316 at 100k), so that a request scans about as many rows at
        any size (every cluster when there are fewer rows)."""
        average = len(self.store) / self.lists
        return max(1, min(self.lists, round(SCAN_ROWS / max(average, 1.0))))

    def best_clusters(self, query: np.ndarray, probes: int) -> np.ndarray:
        """The `probes` clusters whose best row is likely to score best against `query` (any
        order): the centroid's (a mean direction) score times the cluster's longest vector, so
        that under `dot` a cluster of long vectors, which scores high even a little off the
        query's direction, is not passed over for a cluster of short ones."""
        if probes >= self.lists:
            return np.arange(self.lists)
        scores = (self.centroids @ query) * self.reach
        best: np.ndarray = np.argpartition(-scores, probes - 1)[:probes]
        return best

    def _scan(self, clusters: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(store rows ascending, scores) of the rows of `clusters` (ascending, unique): each
        cluster's contiguous slice scored into one preallocated array, no per-row Python."""
        starts, ends = self.bounds[clusters], self.bounds[clusters + 1]
        lengths = ends - starts
        offsets = np.cumsum(lengths) - lengths
        scores = np.empty(int(lengths.sum()), np.float32)
        for a, b, o in zip(starts.tolist(), ends.tolist(), offsets.tolist(), strict=True):
            np.matmul(self.store[a:b], query, out=scores[o : o + b - a])
        rows = np.arange(len(scores), dtype=np.int64) + np.repeat(starts - offsets, lengths)
        if self.scale is not None:
            scores *= self.scale[rows]
        return rows, scores

    def layout(self) -> Layout | None:
        """(centroids, each item row's cluster): what rebuilds this index without k-means
        (`build(..., layout=...)`; the embedding artifact stores it), None when exact."""
        if self.lists == 1:
            return None
        per_row = np.repeat(np.arange(self.lists, dtype=np.int32), np.diff(self.bounds))
        return self.centroids, per_row[self.where]

    def cluster(self, rows: np.ndarray) -> np.ndarray:
        """The cluster of each item row."""
        found: np.ndarray = np.searchsorted(self.bounds, self.where[rows], side="right") - 1
        return found

    def _score(self, start: int, end: int, query: np.ndarray) -> np.ndarray:
        s: np.ndarray = self.store[start:end] @ query
        return s if self.scale is None else s * self.scale[start:end]


def build(
    vectors: np.ndarray, cosine: bool, seed: int = 0, layout: Layout | None = None
) -> VectorIndex:
    """The index of `vectors` (float32 n x dim; not copied when exact). `layout`: the centroids
    and each row's cluster of an index built before (`VectorIndex.layout`, checked by the
    caller), which skips the k-means (~37 s at 1M items) and the assignment."""
    n = len(vectors)
    scale = _inverse_norms(vectors) if cosine else None
    if n < EXACT_BELOW:
        everything = np.arange(n, dtype=np.int64)
        bounds = np.array([0, n], np.int64)
        centroid = np.zeros((1, vectors.shape[1]), np.float32)
        reach = np.ones(1, np.float32)
        return VectorIndex(vectors, everything, everything, bounds, centroid, scale, reach)
    if layout is None:
        lists = max(2, round(math.sqrt(n)))
        inverse = scale if scale is not None else _inverse_norms(vectors)
        centroids = _kmeans(vectors, inverse, lists, np.random.default_rng(seed))
        assign = _assign(vectors, inverse, centroids)
    else:
        centroids, assign = layout[0], layout[1].astype(np.int64)
        lists = len(centroids)
    order = np.argsort(assign, kind="stable")
    where = np.empty(n, np.int64)
    where[order] = np.arange(n)
    bounds = np.searchsorted(assign[order], np.arange(lists + 1)).astype(np.int64)
    store = vectors[order]
    scale = None if scale is None else scale[order]
    return VectorIndex(store, order, where, bounds, centroids, scale, _reach(store, scale, bounds))


def _reach(store: np.ndarray, scale: np.ndarray | None, bounds: np.ndarray) -> np.ndarray:
    """Each cluster's longest scored vector (1 for cosine, whose vectors are scaled to unit
    length; 0 for an empty cluster)."""
    lists = len(bounds) - 1
    if scale is not None:
        return np.where(np.diff(bounds) > 0, 1.0, 0.0).astype(np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", store, store))
    reach = np.zeros(lists, np.float32)
    filled = np.diff(bounds) > 0
    reach[filled] = np.maximum.reduceat(norms, bounds[:-1][filled])
    return reach


def _inverse_norms(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1)
    return np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 1.0).astype(np.float32)


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each point's nearest centroid (squared Euclidean distance)."""
    half = 0.5 * np.einsum("ij,ij->i", centroids, centroids)
    nearest: np.ndarray = np.argmax(points @ centroids.T - half, axis=1)
    return nearest


def _kmeans(
    vectors: np.ndarray, inverse: np.ndarray, lists: int, rng: np.random.Generator
) -> np.ndarray:
    """Centroids of the vectors' directions (spherical: clusters of even size, where k-means on
    the raw vectors heaped the short ones near the origin, one cluster of 10% of the items)."""
    n = len(vectors)
    chosen = np.sort(rng.choice(n, min(n, lists * SAMPLE_PER_LIST), replace=False))
    sample = vectors[chosen] * inverse[chosen, None]
    centroids: np.ndarray = sample[rng.choice(len(sample), lists, replace=False)]
    for _ in range(KMEANS_ROUNDS):
        label = _nearest(sample, centroids)
        order = np.argsort(label, kind="stable")
        counts = np.bincount(label, minlength=lists)
        filled = counts > 0  # an empty cluster keeps its centroid
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[filled]
        sums = np.add.reduceat(sample[order], starts, axis=0)
        centroids[filled] = sums / counts[filled, None]
    return centroids


def _assign(vectors: np.ndarray, inverse: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    out = np.empty(len(vectors), np.int64)
    for start in range(0, len(vectors), CHUNK):
        chunk = vectors[start : start + CHUNK]
        chunk = chunk * inverse[start : start + CHUNK, None]
        out[start : start + CHUNK] = _nearest(chunk, centroids)
    return out
