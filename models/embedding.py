"""Recommendations from an item-embedding table (e.g. implicit-ALS item factors, or any notebook's).

Artifact (kind `embedding`, the same two file names as the neighbour table so the registry moves
both alike):

- `recs.json`: `format` 1, `name` "recs", `kind` "embedding", `items` (unique item ids; row i of
  the matrix is `items[i]`), optional `version`, `created`, `recency_decay` (0..1),
  `similarity` (`dot`, the default, or `cosine`), `metrics`, `training`;
- `recs.npz` (read with `allow_pickle=False`), exactly two arrays: `vectors` (float32,
  n_items x dim, 1 <= dim <= 1024, finite) and `popular` (integer row indices, unique, best first:
  the best-seller fill and fallback).

Serving (`EmbeddingRecommender.recommend`, the signature of `models.recs.Recommender`): the user
vector is the weighted sum of the vectors of the newest `history` items of the user's long history
(`models.recs.history_weights`, as the neighbour table weighs them: newest most, plus
`history_floor` each; optional `history` and `history_floor` in `recs.json`, 30 and 0 without),
L2-normalized; a candidate's score is its dot product with
the user vector (with `similarity: cosine`, item vectors are L2-normalized first) minus its own
contribution, so that, as with neighbour tables, a recent item is scored by the other recent items
and not by itself; only positive scores count; ties by row; excluded and disallowed items are
dropped, popular items fill up to k. `dot` keeps the item vectors' norms, which in ALS factors
carry how much evidence an item has: on UCI's validation period it scored HR@10 0.39 against 0.29
for `cosine`.

The vectors are held once, by a `models.vector_index.VectorIndex`: its layout (centroids and each
item's cluster) is computed once when the model is made and stored in the artifact (format 2:
`ivf_centroids`, `ivf_assign`), so a load only regroups the rows; a format-1 artifact (without
it) still loads, clustering at load as before (~37 s at 1M items). Below
`EXACT_BELOW` (50,000) items every candidate is scored (exact); above, the items are grouped in
~sqrt(n) clusters (spherical k-means) and a request scores the `probes` clusters (as many as
hold ~16,000 rows: 16 of 1,000 at 1M) whose
centroids, each times its cluster's longest vector, score best against the user vector and the
clusters of its `OWN_CLUSTERS` (8) heaviest history items (~2.5% of the items at 1M):
approximate, measured in docs/benchmarks.md (benchmarks/embedding_latency.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.events import Event
from models import vector_index
from models.artifacts import (
    NPZ_ERRORS,
    ModelLoadError,
    check_item_ids,
    check_npz,
    json_object,
    make_version,
    read_json,
    require,
    rfc3339,
    utc_now,
)
from models.item_ids import ItemIds
from models.recs import (
    HISTORY_FLOOR,
    HISTORY_USED,
    JSON_NAME,
    LEGACY_HISTORY,
    NPZ_NAME,
    RECENCY_DECAY,
    SIGNAL_WEIGHTS,
    _histories,
    _popularity,
    check_history_settings,
    fill_popular,
    history_weights,
)

FORMAT = 2  # 2: the index's layout stored (ivf_centroids, ivf_assign); 1 builds it at load
FORMATS = (1, 2)
KIND = "embedding"
MAX_DIM = 1024
ARRAYS = ("vectors", "popular")
LAYOUT = ("ivf_centroids", "ivf_assign")  # format 2, when the index has clusters
SIMILARITIES = ("dot", "cosine")
NEIGHBOURS_SHOWN = 50  # neighbours_of: what the explain route shows
OWN_CLUSTERS = 8  # the clusters of this many of the history's heaviest items are probed too
EPSILON = 1e-6  # a score at or below this is no evidence (own-contribution rounding included)
# The largest magnitude of a vector's value: a user vector sums at most 10,000 history items
# weighing at most 101 each, so its squared norm stays below 1024 * (1e6 * 1e9)**2 = 1e33, far
# within float32 (3.4e38). Vectors of 1e30 overflowed the norms to inf: NaN or zero scores.
MAX_VALUE = 1e9


@dataclass
class EmbeddingRecommender:
    version: str
    created: str
    items: Sequence[str]  # row order; held as ItemIds once built
    vectors: np.ndarray = field(repr=False, compare=False)  # float32, len(items) x dim: init only
    popular: list[str]  # best first
    metrics: dict[str, Any] = field(default_factory=dict)
    recency_decay: float = RECENCY_DECAY
    training: dict[str, Any] = field(default_factory=dict)
    similarity: str = "dot"
    history: int = HISTORY_USED
    history_floor: float = HISTORY_FLOOR
    name: str = "recs"
    # the index's layout as saved (init only): the index is rebuilt from it, not clustered again
    layout: vector_index.Layout | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ModelLoadError(f"similarity is one of {', '.join(SIMILARITIES)}")
        self._ids = ItemIds.of(self.items)  # one buffer and a hash index (models.item_ids)
        self.items = self._ids
        vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)  # no copy if float32
        cosine = self.similarity == "cosine"
        self._ivf = vector_index.build(vectors, cosine, layout=self.layout)
        del self.vectors  # one copy per process: the index's (grouped by cluster when large)
        del self.layout
        self.probes = self._ivf.probes()

    def item_vectors(self) -> np.ndarray:
        """The item vectors as given, row i for items[i] (what `save` writes)."""
        return self._ivf.item_vectors()

    def _user(self, recent: Sequence[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the user's L2-normalized vector, its history's item rows, the part of each row's own
        score that its vector put there); an empty vector when nothing in the history is known."""
        rows: list[int] = []
        weights: list[float] = []
        recent = recent[: self.history]
        every = history_weights(recent, self.recency_decay, self.history_floor)
        found_rows = self._ids.rows_of([item for item, _ts in recent])
        for i, weight in zip(found_rows, every, strict=True):
            if i is not None:
                rows.append(i)
                weights.append(weight)
        found = np.array(rows, dtype=np.int64)
        w = np.array(weights, dtype=np.float32)
        unit = self._ivf.unit(found)
        user = w @ unit if rows else np.zeros(0, np.float32)
        norm = float(np.linalg.norm(user))
        if norm == 0.0:
            return np.zeros(0, np.float32), found, w
        return user / norm, found, w * np.einsum("ij,ij->i", unit, unit) / norm

    def _scores(self, recent: Sequence[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
        """(item rows, scores) of the candidates the index finds for the user's history, each
        history item's own contribution left out of its score."""
        user, rows, own = self._user(recent)
        if not len(user):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        heaviest = rows[np.argsort(-own, kind="stable")[:OWN_CLUSTERS]]
        positions, scores = self._ivf.search(user, self.probes, heaviest)
        mine = self._ivf.where[rows]
        at = np.minimum(np.searchsorted(positions, mine), max(len(positions) - 1, 0))
        hit = positions[at] == mine if len(positions) else np.zeros(0, bool)
        np.subtract.at(scores, at[hit], own[hit])
        return self._ivf.order[positions], scores

    def recommend(
        self,
        recent: Sequence[tuple[str, int]],
        exclude: Container[str],
        k: int = 20,
        allowed: Callable[[str], bool] | None = None,
    ) -> list[str]:
        """Up to k item ids, best first (see the module's docstring)."""
        out: list[str] = []
        taken: set[str] = set()
        rows, scores = self._scores(recent)
        n = len(rows)
        seen = 0
        size = min(n, 4 * k + 64)
        while k > 0 and seen < n and len(out) < k:
            top = np.argpartition(-scores, size - 1)[:size] if size < n else np.arange(n)
            order = top[np.lexsort((rows[top], -scores[top]))]
            for j in order[seen:].tolist():
                if scores[j] <= EPSILON:  # nothing in common: the popular fill decides
                    seen = n
                    break
                candidate = self.items[rows[j]]
                if candidate in exclude or (allowed is not None and not allowed(candidate)):
                    continue
                out.append(candidate)
                taken.add(candidate)
                if len(out) >= k:
                    return out
            seen = max(seen, size)
            size = min(n, size * 4)
        return fill_popular(out, taken, self.popular, k, exclude, allowed)

    def popular_items(
        self,
        k: int,
        allowed: Callable[[str], bool] | None = None,
        exclude: Container[str] = (),
    ) -> list[str]:
        """The k most purchased items that pass the filters (best-sellers)."""
        return self.recommend((), exclude, k, allowed)

    def neighbours_of(self, item: str) -> list[tuple[str, float]]:
        """The items most similar to `item` (by the model's similarity), best first."""
        i = self._ids.get(item)
        if i is None:
            return []
        positions, sims = self._ivf.search(self._ivf.unit(np.array([i]))[0], self.probes)
        rows = self._ivf.order[positions]
        sims[rows == i] = -np.inf
        size = min(NEIGHBOURS_SHOWN, len(rows) - 1)
        if size <= 0:
            return []
        top = np.argpartition(-sims, size - 1)[:size]
        order = top[np.lexsort((rows[top], -sims[top]))]
        return [(self.items[rows[j]], float(sims[j])) for j in order.tolist() if sims[j] > 0]

    # -- artifacts -------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        layout = self._ivf.layout()
        arrays: dict[str, Any] = {
            "vectors": self.item_vectors(),
            "popular": np.array([self._ids.index(p) for p in self.popular], dtype=np.int32),
        }
        if layout is not None:
            arrays.update(zip(LAYOUT, layout, strict=True))
        np.savez(d / NPZ_NAME, **arrays)  # stored, not deflated: loads read it (models.recs)
        meta = {
            "format": FORMAT if layout is not None else 1,
            "name": self.name,
            "kind": KIND,
            "version": self.version,
            "created": self.created,
            "recency_decay": self.recency_decay,
            "similarity": self.similarity,
            "history": self.history,
            "history_floor": self.history_floor,
            "metrics": self.metrics,
            "training": self.training,
            "items": list(self.items),
        }
        (d / JSON_NAME).write_text(json.dumps(meta, separators=(",", ":")) + "\n", "utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> EmbeddingRecommender:
        d = Path(directory)
        path = d / JSON_NAME
        meta = read_json(path, "recs")
        require(meta, path, "version", "created", "items")
        if meta.get("name", "recs") != "recs" or meta.get("format") not in FORMATS:
            raise ModelLoadError(f"{path}: not a format-{FORMAT} recs artifact")
        if meta.get("kind") != KIND:
            raise ModelLoadError(f"{path}: kind is {meta.get('kind')!r}, not {KIND!r}")
        items = check_item_ids(meta["items"], str(path))
        decay = meta.get("recency_decay", RECENCY_DECAY)
        if not isinstance(decay, int | float) or not 0.0 <= float(decay) <= 1.0:
            raise ModelLoadError(f"{path}: recency_decay must be a number in 0..1")
        similarity = meta.get("similarity", "dot")
        if similarity not in SIMILARITIES:
            raise ModelLoadError(f"{path}: similarity is one of {', '.join(SIMILARITIES)}")
        history, floor = check_history_settings(
            meta.get("history", LEGACY_HISTORY), meta.get("history_floor", 0.0), str(path)
        )
        vectors, popular, layout = _read_arrays(d / NPZ_NAME, len(items), meta["format"] == 2)
        return cls(
            version=str(meta["version"]),
            created=str(meta["created"]),
            items=[str(i) for i in items],
            vectors=vectors,
            popular=[items[i] for i in popular.tolist()],
            metrics=json_object(meta, "metrics", path),
            recency_decay=float(decay),
            training=json_object(meta, "training", path),
            similarity=str(similarity),
            history=history,
            history_floor=floor,
            layout=layout,
        )


def _read_arrays(
    path: Path, n: int, with_layout: bool
) -> tuple[np.ndarray, np.ndarray, vector_index.Layout | None]:
    """`vectors`, `popular` and (format 2) the index layout of an embedding `.npz`, validated;
    ModelLoadError saying why not."""
    expected = (*ARRAYS, *LAYOUT) if with_layout else ARRAYS
    matrix = n * MAX_DIM * 4  # float32 rows of at most MAX_DIM
    limits = {"vectors": matrix, "popular": n * 8, "ivf_centroids": matrix, "ivf_assign": n * 8}
    try:
        check_npz(
            path,
            {a: limits[a] for a in expected},
            {"vectors": n},
            lambda _, found: (
                f"{path.with_name(JSON_NAME)} no longer matches {path}: its items list holds "
                f"{n:,} items, the vectors in {path.name} are of {found:,} (the two files are "
                "written together by training: an items list edited by hand, or files of two "
                "versions)"
            ),
        )
        with np.load(path, allow_pickle=False) as npz:
            names = sorted(npz.files)
            if names != sorted(expected) and not (with_layout and names == sorted(ARRAYS)):
                raise ModelLoadError(
                    f"{path}: an embedding .npz holds exactly the arrays {', '.join(expected)} "
                    f"(found: {', '.join(names) or 'none'})"
                )
            vectors, popular = npz["vectors"], npz["popular"]
            stored = tuple(npz[a] for a in LAYOUT) if len(names) > len(ARRAYS) else None
    except FileNotFoundError:
        raise ModelLoadError(f"missing recs artifact {path}") from None
    except ModelLoadError:
        raise
    except NPZ_ERRORS as exc:  # object arrays (pickles) land here
        raise ModelLoadError(f"{path} is not a valid embedding .npz: {exc}") from None
    if vectors.dtype != np.float32:
        raise ModelLoadError(f"{path}: vectors must be float32, not {vectors.dtype}")
    if vectors.ndim != 2 or vectors.shape[0] != n or not 1 <= vectors.shape[1] <= MAX_DIM:
        raise ModelLoadError(
            f"{path}: vectors must be {n} x dim (one row per item, 1 <= dim <= {MAX_DIM}), "
            f"not {' x '.join(map(str, vectors.shape))}"
        )
    if not np.isfinite(vectors).all():
        raise ModelLoadError(f"{path}: vectors hold NaN or infinite values")
    if vectors.size and not -MAX_VALUE <= vectors.min() <= vectors.max() <= MAX_VALUE:
        raise ModelLoadError(f"{path}: vectors hold values beyond +-{MAX_VALUE:g}: scores overflow")
    if popular.ndim != 1 or popular.dtype.kind not in "iu":
        raise ModelLoadError(f"{path}: popular must be a 1-d array of integer row indices")
    if len(popular) and not 0 <= int(popular.min()) <= int(popular.max()) < n:
        raise ModelLoadError(f"{path}: popular holds row indices outside 0..{n - 1}")
    if len(np.unique(popular)) != len(popular):
        raise ModelLoadError(f"{path}: popular must not repeat an item")
    return vectors, popular, None if stored is None else _layout(path, stored, vectors.shape)


def _layout(
    path: Path, stored: tuple[np.ndarray, ...], shape: tuple[int, ...]
) -> vector_index.Layout:
    """The stored index layout, checked against the vectors: float32 finite centroids of their
    dimension, one cluster number in range per item row."""
    centroids, assign = stored
    n, dim = shape
    if centroids.dtype != np.float32 or centroids.ndim != 2 or centroids.shape[1] != dim:
        raise ModelLoadError(f"{path}: ivf_centroids must be float32 lists x {dim}")
    bounded = (
        centroids.size and np.isfinite(centroids).all() and np.abs(centroids).max() <= MAX_VALUE
    )
    if not 2 <= len(centroids) <= max(2, n) or not bounded:
        raise ModelLoadError(f"{path}: ivf_centroids must be 2..{n} finite rows within +-1e9")
    if assign.shape != (n,) or assign.dtype.kind not in "iu":
        raise ModelLoadError(f"{path}: ivf_assign must hold one integer per item")
    if n and not 0 <= int(assign.min()) <= int(assign.max()) < len(centroids):
        raise ModelLoadError(f"{path}: ivf_assign holds clusters outside 0..{len(centroids) - 1}")
    return centroids, assign


# -- training (implicit-ALS, an optional peer) -----------------------------------------------


def interaction_matrix(
    events: Iterable[Event], ignore: Container[str] = ()
) -> tuple[list[str], list[str], Any]:
    """(users, items sorted, users x items scipy CSR of the strongest signal per cell)."""
    from scipy.sparse import csr_matrix  # scikit-learn's own dependency

    histories = _histories(events, ignore)
    items = sorted({i for h in histories.values() for i in h})
    index = {item: j for j, item in enumerate(items)}
    users = list(histories)
    rows, cols, vals = [], [], []
    for u, user in enumerate(users):
        for item, w in histories[user].items():
            rows.append(u)
            cols.append(index[item])
            vals.append(w)
    matrix = csr_matrix(
        (np.array(vals, np.float32), (rows, cols)), shape=(len(users), len(items)), dtype=np.float32
    )
    return users, items, matrix


ALS_PARAMS: dict[str, Any] = {
    "factors": 64,
    "iterations": 15,
    "regularization": 0.05,
    "random_state": 0,
}


def fit_als(matrix: Any, **params: Any) -> Any:
    """An implicit-ALS model fitted on `matrix` (users x items); ImportError without `implicit`."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares  # optional peer, not a dependency
    except ImportError:
        raise ImportError(
            "training an embedding recommender needs the optional `implicit` package "
            "(pip install implicit); or write recs.json + recs.npz yourself (models/README.md)"
        ) from None
    model = AlternatingLeastSquares(**{**ALS_PARAMS, **params})
    model.fit(matrix, show_progress=False)
    return model


def train_als_recs(
    events: Iterable[Event],
    ignore: Container[str] = (),
    recency_decay: float = RECENCY_DECAY,
    **params: Any,
) -> EmbeddingRecommender:
    """An embedding recommender from implicit-ALS item factors (same signal weights as the
    neighbour table: view 1, like 1, share 2, cart 3, purchase 5)."""
    data = events if isinstance(events, list) else list(events)
    users, items, matrix = interaction_matrix(data, ignore)
    if not items:
        raise ValueError("no item interactions to train on")
    als = fit_als(matrix, **params)
    vectors = np.ascontiguousarray(np.asarray(als.item_factors, dtype=np.float32))
    index = set(items)
    popular = [p for p in _popularity(data, ignore) if p in index]
    when = utc_now()
    content = vectors.tobytes() + json.dumps([items, popular]).encode()
    settings = {**ALS_PARAMS, **params}
    return EmbeddingRecommender(
        version=make_version("recs", when, content),
        created=rfc3339(when),
        items=items,
        vectors=vectors,
        popular=popular,
        metrics={"n_items": len(items), "n_users": len(users), "dim": int(vectors.shape[1])},
        recency_decay=recency_decay,
        training={"algorithm": "implicit-als", **settings, "signals": SIGNAL_WEIGHTS},
    )
