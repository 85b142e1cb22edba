"""`make evaluate`: every data set x every method, written to docs/evaluation.md.

python -m benchmarks.evaluation [--out docs/evaluation.md] [--max-users N]

The same code as `persona models evaluate` (models/evaluate.py) on each data set of
benchmarks/datasets.py; a data set whose file or package is missing is listed with the reason.
Takes minutes; never part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.datasets import SETS, DataSet, events_file
from engine.events import Event
from engine.profile import is_reversal
from engine.sources import UCI_NON_PRODUCT_CODES, ReadStats, read_events
from models.evaluate import AT, evaluate_churn, evaluate_recs, markdown

HR = f"hr@{AT}"
RECS_METHODS = ("persona", "popularity", "item_knn", "item_knn_last5", "ease", "implicit_als")
CHURN_MODELS = ("persona", "persona_uncalibrated", "gbm", "rfm_logistic")


def _log(message: str) -> None:
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)


def load(path: Path) -> tuple[list[Event], ReadStats]:
    stats = ReadStats()
    events = [e for e in read_events(path, stats=stats, history=True) if not is_reversal(e)]
    return events, stats


def evaluate_set(data: DataSet, workdir: Path, max_users: int | None) -> dict[str, Any]:
    """{"name", "events", "users", "recs": [...], "churn": {...} | reason, "missing": reason}."""
    found = events_file(data.name, workdir)
    if isinstance(found, str):
        return {"name": data.name, "missing": found}
    events, _stats = load(found)
    out: dict[str, Any] = {
        "name": data.name,
        "events": len(events),
        "users": len({e.user_id for e in events}),
        "recs": [],
    }
    if "recs" in data.tasks:
        for protocol in data.protocols:
            started = time.monotonic()
            result = evaluate_recs(events, protocol, UCI_NON_PRODUCT_CODES, max_users=max_users)
            _log(f"{data.name} {protocol}: {time.monotonic() - started:.0f} s")
            out["recs"].append(result)
    if "churn" in data.tasks:
        try:
            out["churn"] = evaluate_churn(events, data.horizon_days)
        except ValueError as exc:  # a split with one class only, say
            out["churn"] = f"not evaluated: {exc}"
    return out


def _cell(metrics: dict[str, Any] | None, best: float) -> str:
    if metrics is None:
        return "n/i"
    value = metrics[HR]
    return f"**{value:.3f}**" if value == best and best > 0 else f"{value:.3f}"


def recs_summary(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"| data set, split | users | {' | '.join(RECS_METHODS)} | persona / best peer "
        "| persona's lambda |",
        "|---|---" + "|---" * len(RECS_METHODS) + "|---|---|",
    ]
    for result in results:
        for split in result.get("recs", ()):
            models = split["models"]
            best = max(m[HR] for m in models.values())
            peer = max(m[HR] for name, m in models.items() if name != "persona")
            ratio = f"{models['persona'][HR] / peer:.2f}x" if peer else "n/a"
            cells = " | ".join(_cell(models.get(name), best) for name in RECS_METHODS)
            lines.append(
                f"| {result['name']}, {split['protocol']} | {split['test_users']} | {cells} | "
                f"{ratio} | {lambda_cell(split.get('persona_lambda'))} |"
            )
    return lines


def lambda_cell(choice: dict[str, Any] | None) -> str:
    """The EASE lambda the default training chose on the split's training part, and how."""
    if not choice:
        return ""
    how = {"searched": "searched", "pinned": "pinned"}.get(choice["ease_lambda_by"], "too few")
    return f"{choice['ease_lambda']:g} ({how})"


def churn_summary(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| data set | test users | churned | "
        + " | ".join(f"{m} ROC AUC / Brier" for m in CHURN_MODELS)
        + " | persona - rfm_logistic |",
        "|---|---|---" + "|---" * len(CHURN_MODELS) + "|---|",
    ]
    for result in results:
        churn = result.get("churn")
        if isinstance(churn, dict):
            lines.append(_churn_row(result["name"], churn))
        elif isinstance(churn, str):
            lines.append(f"| {result['name']} | {churn} |" + " |" * (len(CHURN_MODELS) + 2))
    return lines


def _churn_row(name: str, churn: dict[str, Any]) -> str:
    """One data set's churn line: each model's ROC AUC / Brier, then Persona's margin over the
    RFM peer (ROC AUC higher is better, Brier lower is better)."""
    models = churn["models"]
    cells = " | ".join(
        f"{models[m]['roc_auc']:.3f} / {models[m]['brier']:.3f}" for m in CHURN_MODELS
    )
    auc = models["persona"]["roc_auc"] - models["rfm_logistic"]["roc_auc"]
    brier = models["persona"]["brier"] - models["rfm_logistic"]["brier"]
    return (
        f"| {name} ({churn['horizon_days']} days) | {churn['test_users']} | "
        f"{churn['test_positive_rate']:.0%} | {cells} | AUC {auc:+.3f}, Brier {brier:+.4f} |"
    )


INTRO = """# Offline evaluation: every data set x every method

Written by `make evaluate` (benchmarks/evaluation.py{sampled}); do not edit by hand. The protocol
is `persona models evaluate`'s (models/evaluate.py), the peers are models/peers.py.

- Recommendations. *leave-last-5*: each user's last 5 distinct items held out (the items first
  seen at or after the time of their 5th newest distinct item), only their earlier events train;
  *time split*: the last 30 days held out, the targets are purchases. Every method ranks 10 items
  and never an item the user interacted with before the cut; only items new to the user count.
  `persona` is the default recommender as `persona models train recs` trains it and as served:
  the neighbour table of `models/recs.py` (EASE with the lambda the training searches for on the
  split's training part alone, of 100, 300, 500, 1000: each training user's last 5 distinct
  items held out again, `models/ease_search.py`; the column "persona's lambda" says which, "too
  few" when under 50 users could be held out, then 100) from the newest 200 items of the long
  history. `item_knn` is plain cosine item-kNN, uniform weights over the whole history;
  `item_knn_last5` over the 5 most recent items; `ease` is EASE (lambda 500) over the 10,000 most
  popular items at most (a dense inverse); `implicit_als` needs the optional `implicit` package
  (n/i: not installed). Nothing here was tuned on these test splits. The column "persona / best
  peer" is Persona's HR@10 over the best peer's: below 1.00x, Persona loses. The default's
  settings were chosen on validation splits:
  [evaluation-validation.md](evaluation-validation.md).
- Churn: fitted at the cut-off newest - 2 x horizon, tested at newest - horizon. `persona` is the
  default churn model as `persona models train churn` fits it: a logistic regression on every
  engine feature (engine/features.py, with the mean days between orders and how overdue the next
  order is), Platt-calibrated on out-of-fold scores; `persona_uncalibrated` the same before
  calibration; `gbm` gradient boosting on the same features; `rfm_logistic` the peer, a plain
  logistic regression (no class weights) on purchase recency, orders and monetary value. The last
  column is Persona's ROC AUC and Brier score minus the peer's: Persona is at least as good where
  the AUC difference is not negative and the Brier difference not positive. Churn needs purchases
  over months: the REES46 head spans 3 hours and the OTTO fixture 20 sessions; the Instacart
  sample's calendar is made up from each user's first order, so every user's history ends at a
  different made-up date and "no order in the last 90 days" would measure the history's length:
  no churn row for them.

MovieLens is kept for acceptance checks: no MovieLens release is read here.
"""


def sources(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| data set | where it comes from | events | users |", "|---|---|---|---|"]
    origin = {d.name: d.origin for d in SETS}
    for r in results:
        data = DataSet(r["name"], (), origin[r["name"]])
        if "missing" in r:
            lines.append(f"| {data.name} | {data.origin} | missing: {r['missing']} | |")
        else:
            lines.append(f"| {data.name} | {data.origin} | {r['events']:,} | {r['users']:,} |")
    return lines


def document(results: list[dict[str, Any]], max_users: int | None) -> str:
    sampled = f", at most {max_users} test users per split" if max_users else ""
    parts = [INTRO.format(sampled=sampled), "## Data sets", "", *sources(results), ""]
    parts += ["## Recommendations: HR@10 (best in bold)", "", *recs_summary(results), ""]
    parts += ["## Churn", "", *churn_summary(results), "", "## Every table", ""]
    for r in results:
        if "missing" not in r:
            churn = r.get("churn") if isinstance(r.get("churn"), dict) else None
            parts += [f"### {r['name']}", "", markdown(r["recs"], churn)]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/evaluation.md")
    parser.add_argument("--max-users", type=int, help="evaluate at most this many users a split")
    parser.add_argument("--only", nargs="*", help="data set names (default: all)")
    parser.add_argument("--json", help="also write every measurement here")
    parser.add_argument("--from-json", help="measure nothing: write the page of an earlier --json")
    args = parser.parse_args(argv)
    chosen = [d for d in SETS if not args.only or d.name in args.only]
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = [evaluate_set(d, Path(tmp), args.max_users) for d in chosen]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    Path(args.out).write_text(document(results, args.max_users))
    _log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
