"""Uncached `recommend` latency of the embedding kind at a large synthetic catalog, exact against
indexed, in one process and one run (issue 21 item 3). Not a test: figures on a shared machine
are noisy; compare the rows of one run.

One synthetic artifact (`benchmarks.model_memory.write_embedding`: dim 64, vectors around 2,000
centres with log-normal norms) is made and loaded once; then, alternating per round, each path
answers the same users (k 20, nothing excluded):

- `exact`: every cluster scanned (the whole item matrix scored);
- `before`: the index as it was until this benchmark's commit: the 32 clusters whose centroids
  score best, plus the clusters of the 8 heaviest history items;
- `indexed`: the index as it serves (`VectorIndex.probes()` clusters, ~16,000 rows, ranked by
  centroid score times their longest vector, plus the same own clusters).

Three kinds of users: `clustered` (5 items from two centres), `random` (5 items drawn uniformly)
and `long` (200 random items, the long history's size). For each path and kind: p50 and p99 in
ms and recall@10 (the share of the exact top 10 that the path's top 10 holds).

    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.embedding_latency [--items N]
        [--users U] [--rounds R]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.model_memory import CENTRES, _items, _vectors, write_embedding
from models import vector_index
from models.bundle import load_model
from models.embedding import EmbeddingRecommender

History = list[tuple[str, int]]
BEFORE_PROBES = 32


def users(n: int, count: int) -> dict[str, list[History]]:
    """The three kinds of users' histories (newest first), fixed by seeds."""
    _, label = _vectors(n, 1)
    rng = np.random.default_rng(9)
    by_centre = np.argsort(label, kind="stable")
    starts = np.searchsorted(label[by_centre], np.arange(CENTRES + 1))
    items = _items(n)

    def near(c: int) -> int:
        return int(by_centre[rng.integers(starts[c], starts[c + 1])])

    clustered = [[near(int(c)) for c in rng.integers(0, CENTRES, 2) for _ in range(3)][:5]
                 for _ in range(count)]  # fmt: skip
    random = [rng.integers(0, n, 5).tolist() for _ in range(count)]
    long = [rng.integers(0, n, 200).tolist() for _ in range(max(1, count // 4))]
    return {kind: [[(items[r], 1_000 - i) for i, r in enumerate(rows)] for rows in histories]
            for kind, histories in (("clustered", clustered), ("random", random),
                                    ("long", long))}  # fmt: skip


def paths(model: EmbeddingRecommender) -> dict[str, tuple[vector_index.VectorIndex, int]]:
    """(index, probes) of each path, over the one copy of the vectors."""
    index = model._ivf
    flat = dataclasses.replace(index, reach=np.ones_like(index.reach))  # centroids alone
    return {"exact": (index, index.lists), "before": (flat, BEFORE_PROBES),
            "indexed": (index, index.probes())}  # fmt: skip


def timed(
    model: EmbeddingRecommender, histories: Sequence[History]
) -> tuple[list[list[str]], list[float]]:
    out, times = [], []
    for history in histories:
        start = time.perf_counter()
        out.append(model.recommend(history, set(), 20))
        times.append((time.perf_counter() - start) * 1000)
    return out, times


def recall_at_10(got: list[list[str]], exact: list[list[str]]) -> float:
    shares = [len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(got, exact, strict=True)]
    return round(float(np.mean(shares)), 3)


def measure(model: EmbeddingRecommender, kinds: dict[str, list[History]], rounds: int) -> None:
    times: dict[tuple[str, str], list[float]] = {}
    answers: dict[tuple[str, str], list[list[str]]] = {}
    for _ in range(rounds):
        for path, (index, probes) in paths(model).items():
            model._ivf, model.probes = index, probes
            for kind, histories in kinds.items():
                answers[path, kind], spent = timed(model, histories)
                times.setdefault((path, kind), []).extend(spent)
    for (path, kind), spent in times.items():
        p50, p99 = (round(float(np.percentile(spent, q)), 2) for q in (50, 99))
        recall = recall_at_10(answers[path, kind], answers["exact", kind])
        print(json.dumps({"path": path, "users": kind, "requests": len(spent), "p50_ms": p50,
                          "p99_ms": p99, "recall_at_10": recall}), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        write_embedding(Path(tmp), args.items, 1)
        print(f"made the model: {time.perf_counter() - began:.1f} s", flush=True)
        model = load_model(tmp)
    assert isinstance(model, EmbeddingRecommender)
    index = model._ivf
    print(json.dumps({"items": args.items, "lists": index.lists, "probes": index.probes(),
                      "before_probes": BEFORE_PROBES}), flush=True)  # fmt: skip
    measure(model, users(args.items, args.users), args.rounds)


if __name__ == "__main__":
    main()
