"""Train both default models from one event file and write their artifacts.

python -m models.train EVENTS_FILE OUT_DIR [HORIZON_DAYS]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from engine.sources import UCI_NON_PRODUCT_CODES, ReadStats
from models.churn import train_churn_on
from models.churn_stream import churn_dataset_file
from models.ease_table import AUTO, Lambda
from models.recs_stream import train_recs_file
from models.registry import CHURN_FILE


def _log(message: str) -> None:
    print(f"[models.train] {message}", file=sys.stderr, flush=True)


def train_all(
    events_path: str | Path,
    out_dir: str | Path,
    horizon_days: int = 90,
    k: int = 50,
    lam: Lambda = AUTO,
) -> dict[str, Any]:
    """Train churn and recs (`lam`: the EASE lambda, AUTO searched for on the events) from the
    events file, read in streaming passes (never a list of every event: models/churn_stream.py,
    models/recs_stream.py), write churn.json, recs.npz and recs.json into `out_dir`; returns
    {"churn": {"version", "metrics"}, "recs": {...}, "events": n}. Cancellations (UCI's `C`
    invoices) stay out: models learn from what was bought."""
    out = Path(out_dir)
    started = time.monotonic()
    stats = ReadStats()
    data = churn_dataset_file(events_path, horizon_days, stats=stats)
    _log(f"read {stats.events} events ({stats.format}, skipped {dict(stats.skipped)})")
    churn = train_churn_on(data, horizon_days)
    _log(f"churn {churn.version}: {churn.metrics}")
    # UCI's fee/postage codes are not products; elsewhere the set matches nothing.
    recs = train_recs_file(events_path, k=k, ignore=UCI_NON_PRODUCT_CODES, lam=lam)
    _log(f"recs {recs.version}: {recs.metrics}")
    out.mkdir(parents=True, exist_ok=True)
    churn.save(out / CHURN_FILE)
    recs.save(out)
    _log(f"wrote {out} in {time.monotonic() - started:.1f}s")
    return {
        "events": stats.events,
        "churn": {"version": churn.version, "created": churn.created, "metrics": churn.metrics},
        "recs": {"version": recs.version, "created": recs.created, "metrics": recs.metrics},
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    horizon = int(args[2]) if len(args) == 3 else 90
    train_all(args[0], args[1], horizon)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
