"""Churn scoring throughput: scikit-learn predict_proba one row at a time vs a batch vs numpy.

python benchmarks/scoring.py [N_ROWS]

Prints scores/s for each path (figures, not assertions). The engine scores with the numpy path
(`ChurnModel.score_batch` for the logistic model); a scikit-learn model published through skops is
scored with predict_proba, so batch it (`score_profiles`) where throughput matters.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from engine.features import FEATURE_NAMES
from models.registry import ModelSet


def rate(label: str, n: int, run: Callable[[], object]) -> None:
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    print(f"{label:48} {n / elapsed:>14,.0f} scores/s  ({elapsed / n * 1e6:8.2f} us/score)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(n, len(FEATURE_NAMES)))) * 20
    y = (x[:, 0] + rng.normal(size=n) * 10 > 20).astype(int)
    logit = LogisticRegression(max_iter=500).fit(x[:5000], y[:5000])
    gbm = HistGradientBoostingClassifier(max_iter=100, max_depth=3).fit(x[:5000], y[:5000])
    churn = ModelSet.default().churn
    single = min(n, 2000)
    print(f"{n:,} rows of {len(FEATURE_NAMES)} features ({single:,} for the per-row loops)")
    rate(
        "sklearn LogisticRegression predict_proba, 1 row",
        single,
        lambda: [logit.predict_proba(x[i : i + 1]) for i in range(single)],
    )
    rate("sklearn LogisticRegression predict_proba, batch", n, lambda: logit.predict_proba(x))
    rate(
        "sklearn HistGradientBoosting predict_proba, 1 row",
        single,
        lambda: [gbm.predict_proba(x[i : i + 1]) for i in range(single)],
    )
    rate("sklearn HistGradientBoosting predict_proba, batch", n, lambda: gbm.predict_proba(x))
    rate(
        "engine ChurnModel.score (pure Python), 1 row",
        single,
        lambda: [churn.score(list(x[i])) for i in range(single)],
    )
    rate("engine ChurnModel.score_batch (numpy), batch", n, lambda: churn.score_batch(x))


if __name__ == "__main__":
    main()
