"""How the churn model's features and calibration are chosen: validation splits only (issue 17).

python -m benchmarks.tune_churn [--horizon-days 90]

For each churn data set of benchmarks/datasets.py the evaluation tests at newest - horizon; here
the test labels are never read: fitted at newest - 3 x horizon, measured at newest - 2 x horizon.
Feature sets (the RFM peer's three, the 14 features before issue 17, every engine feature) x
calibrations (none, Platt on out-of-fold scores as shipped, Platt on a later window: the model
fitted one horizon earlier and calibrated on the newest training labels), ROC AUC / Brier.
Prints Markdown; takes minutes (one profile fold per cut-off). Not in `make test`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from benchmarks.datasets import SETS, events_file
from benchmarks.evaluation import load
from engine.events import Event
from engine.features import DAY_MS, FEATURE_NAMES
from models.churn import ChurnDataset, churn_dataset, fit_calibrated, fit_linear, platt

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "rfm": ("purchase_recency_days", "orders", "monetary"),
    "14 before issue 17": FEATURE_NAMES[:14],
    "all (shipped)": FEATURE_NAMES,
}
Scorer = Callable[[ChurnDataset, ChurnDataset, ChurnDataset, list[int]], np.ndarray]


def _cols(x: np.ndarray, cols: list[int]) -> np.ndarray:
    return np.asarray(x[:, cols])


def uncalibrated(
    older: ChurnDataset, fit: ChurnDataset, test: ChurnDataset, cols: list[int]
) -> np.ndarray:
    return fit_linear(_cols(fit.x, cols), fit.y).proba(_cols(test.x, cols))


def out_of_fold(
    older: ChurnDataset, fit: ChurnDataset, test: ChurnDataset, cols: list[int]
) -> np.ndarray:
    return fit_calibrated(_cols(fit.x, cols), fit.y)[0].proba(_cols(test.x, cols))


def later_window(
    older: ChurnDataset, fit: ChurnDataset, test: ChurnDataset, cols: list[int]
) -> np.ndarray:
    model = fit_linear(_cols(older.x, cols), older.y)
    slope, offset = platt(model.logits(_cols(fit.x, cols)), fit.y)
    return model.calibrated(slope, offset).proba(_cols(test.x, cols))


CALIBRATIONS: dict[str, Scorer] = {
    "none": uncalibrated,
    "Platt, out of fold (shipped)": out_of_fold,
    "Platt, later window": later_window,
}


def splits(events: list[Event], horizon_days: int) -> tuple[ChurnDataset, ...]:
    """(older, fit, validation): cut-offs newest - 4, 3 and 2 horizons."""
    newest = max(e.ts for e in events)
    cut = [newest - k * horizon_days * DAY_MS for k in (4, 3, 2)]
    return tuple(churn_dataset(events, horizon_days, c) for c in cut)


def table(name: str, events: list[Event], horizon_days: int) -> list[str]:
    older, fit, val = splits(events, horizon_days)
    lines = [
        f"### {name}: fitted on {len(fit.users)} users, validated on {len(val.users)} "
        f"({val.y.mean():.0%} churned); the later window fits on {len(older.users)}",
        "",
        "| features | " + " | ".join(CALIBRATIONS) + " |",
        "|---" * (len(CALIBRATIONS) + 1) + "|",
    ]
    for label, names in FEATURE_SETS.items():
        cols = [FEATURE_NAMES.index(n) for n in names]
        cells = []
        for scorer in CALIBRATIONS.values():
            p = scorer(older, fit, val, cols)
            auc, brier = roc_auc_score(val.y, p), brier_score_loss(val.y, p)
            cells.append(f"{auc:.4f} / {brier:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon-days", type=int, default=90)
    args = parser.parse_args(argv)
    out = ["ROC AUC / Brier on the validation split (the test split is never read)", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for data in SETS:
            found = events_file(data.name, Path(tmp)) if "churn" in data.tasks else None
            if isinstance(found, Path):
                out += table(data.name, load(found)[0], args.horizon_days)
            elif isinstance(found, str):
                out += [f"### {data.name}: {found}", ""]
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
