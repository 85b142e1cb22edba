"""Model load time, memory per process, a hot swap's memory, and uncached request latency of the
recs models at large synthetic catalogs (issue 21 item 3). Not a test: figures on a shared machine
are noisy; compare the ratios within one run.

For each size (default 100k and 1M items) it writes two synthetic artifacts of each kind:
`item_knn` (50 neighbours per item) and `embedding` (dim 64, clustered vectors with uneven norms,
as ALS factors are). Each figure comes from a fresh process (`--child`):

- load: seconds of `models.bundle.load_model` and RSS after it, against the artifact's array bytes;
- swap: RSS with the old model serving while the new one loads (the registry's `_build`), the
  peak sampled while loading, and RSS once the old one is released (the content service holds
  one `ModelSet`; nothing else keeps a model);
- latency (embedding): median and p99 of an uncached `recommend` (k 20, 5 history items from two
  clusters) with the index's probes, and with every cluster probed (the exact answer); the overlap
  of their top 20. Cached requests never reach the model (the content service's block cache).

    .venv/bin/python -m benchmarks.model_memory [--sizes 100000,1000000] [--users 200]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import load_model
from models.embedding import EmbeddingRecommender
from models.recs import Recommender

DIM = 64
NEIGHBOURS = 50
CENTRES = 2_000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _items(n: int) -> list[str]:
    return [f"i{j:07d}" for j in range(n)]


def _vectors(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, DIM), dtype=np.float32)
    label = rng.integers(0, CENTRES, n)
    noise = 0.5 * rng.standard_normal((n, DIM), dtype=np.float32)
    norms = rng.lognormal(0.0, 0.5, (n, 1)).astype(np.float32)
    return ((centres[label] + noise) * norms).astype(np.float32), label


def write_embedding(d: Path, n: int, seed: int) -> None:
    items = _items(n)
    vectors, _ = _vectors(n, seed)
    EmbeddingRecommender(
        version=f"recs-20260101T0000-e{seed:07d}", created="2026-01-01T00:00:00Z", items=items,
        vectors=vectors, popular=items[:500],
    ).save(d)  # fmt: skip


def write_knn(d: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = _items(n)
    neighbours = rng.integers(0, n, n * NEIGHBOURS, dtype=np.int32)
    weights = np.sort(rng.random(n * NEIGHBOURS, dtype=np.float32).reshape(n, -1))[:, ::-1]
    Recommender(
        version=f"recs-20260101T0000-k{seed:07d}", created="2026-01-01T00:00:00Z", items=items,
        indptr=np.arange(0, n * NEIGHBOURS + 1, NEIGHBOURS, dtype=np.int64),
        neighbours=neighbours, weights=weights.ravel().copy(), popular=items[:500],
    ).save(d)  # fmt: skip


def array_bytes(d: Path) -> int:
    with np.load(d / "recs.npz", allow_pickle=False) as npz:
        return sum(npz[name].nbytes for name in npz.files)


# -- children (one fresh process per figure) ----------------------------------------------------


def child_load(d: Path) -> dict[str, Any]:
    before = rss_mb()
    start = time.perf_counter()
    model = load_model(d)
    seconds = time.perf_counter() - start
    gc.collect()
    return {"load_s": round(seconds, 2), "rss_mb": round(rss_mb(), 1),
            "model_mb": round(rss_mb() - before, 1), "version": model.version}  # fmt: skip


def child_swap(old_dir: Path, new_dir: Path) -> dict[str, Any]:
    serving = load_model(old_dir)
    old = weakref.ref(serving)
    gc.collect()
    one = rss_mb()
    peak = [one]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    incoming = load_model(new_dir)  # the old one still serves meanwhile
    done.set()
    sampler.join()
    both = rss_mb()
    serving = incoming  # the swap: one reference replaced
    del incoming
    gc.collect()
    return {"one_model_mb": round(one, 1), "peak_during_load_mb": round(max(peak[0], both), 1),
            "after_swap_mb": round(rss_mb(), 1), "serving": serving.version,
            "old_model_garbage": old() is None}  # fmt: skip


def child_latency(d: Path, n: int, users: int) -> dict[str, Any]:
    model = load_model(d)
    assert isinstance(model, EmbeddingRecommender)
    _, label = _vectors(n, 1)
    rng = np.random.default_rng(9)
    by_centre = np.argsort(label, kind="stable")
    starts = np.searchsorted(label[by_centre], np.arange(CENTRES + 1))
    items = _items(n)
    histories = []
    for _ in range(users):
        rows = [int(by_centre[rng.integers(starts[c], starts[c + 1])])
                for c in rng.integers(0, CENTRES, 2) for _ in range(3)]  # fmt: skip
        histories.append([(items[r], 100 - i) for i, r in enumerate(rows[:5])])
    indexed, fast = _timed(model, histories)
    probes, model.probes = model.probes, model._ivf.lists
    exact, slow = _timed(model, histories)
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(indexed, exact, strict=True)])
    return {"lists": model._ivf.lists, "probes": probes, "p50_ms": fast[0], "p99_ms": fast[1],
            "exact_p50_ms": slow[0], "exact_p99_ms": slow[1],
            "overlap_at_20": round(float(overlap), 3)}  # fmt: skip


def _timed(model: EmbeddingRecommender, histories: list[Any]) -> tuple[list[Any], list[float]]:
    out, times = [], []
    for history in histories:
        start = time.perf_counter()
        out.append(model.recommend(history, set(), 20))
        times.append((time.perf_counter() - start) * 1000)
    return out, [round(float(np.percentile(times, q)), 2) for q in (50, 99)]


# -- the parent ---------------------------------------------------------------------------------


def run_child(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.model_memory", "--child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(n: int, users: int, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"items": n}
    for kind, write in (("item_knn", write_knn), ("embedding", write_embedding)):
        old, new = tmp / f"{kind}-{n}-a", tmp / f"{kind}-{n}-b"
        write(old, n, 1)
        write(new, n, 2)
        out[kind] = {"array_mb": round(array_bytes(old) / 2**20, 1),
                     "load": run_child("load", str(old)),
                     "swap": run_child("swap", str(old), str(new))}  # fmt: skip
        if kind == "embedding":
            out[kind]["latency"] = run_child("latency", str(old), str(n), str(users))
        print(json.dumps({kind: out[kind], "items": n}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        what, *rest = args.child
        if what == "load":
            result = child_load(Path(rest[0]))
        elif what == "swap":
            result = child_swap(Path(rest[0]), Path(rest[1]))
        else:
            result = child_latency(Path(rest[0]), int(rest[1]), int(rest[2]))
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            measure(n, args.users, Path(tmp))


if __name__ == "__main__":
    main()
