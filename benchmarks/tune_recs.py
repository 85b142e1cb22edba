"""How the default recommender's settings were chosen: validation splits only (issue 17 item 4).

python -m benchmarks.tune_recs [--out docs/evaluation-validation.md] [--max-users N]

For each recommendation data set of benchmarks/datasets.py, the evaluation's leave-last-5 split
is made and its test part is never looked at: the training part is split again the same way
(each user's last 5 distinct items of the training part held out) and every candidate setting
of Persona's neighbour table is measured there, beside the peers. Takes minutes (one dense EASE
inverse per data set and lambda); not part of `make evaluate` or `make test`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.datasets import SETS, events_file
from benchmarks.evaluation import load
from engine.events import Event
from engine.sources import UCI_NON_PRODUCT_CODES as IGNORE
from models.ease_table import TABLE_LAMBDA, assemble, ease_rows, sorted_interactions
from models.evaluate import held_history, leave_last_n, ranking_metrics, sample
from models.peers import (
    AT,
    Case,
    Ranker,
    ease_ranker,
    ease_weights,
    knn_ranker,
    popularity_ranker,
)
from models.recs import RECENCY_DECAY, Recommender, fit_recommender

LAMBDAS = (100.0, 500.0, 2000.0)
DECAYS = (0.7, 0.9, 1.0)
K = 50


def served(model: Recommender, decay: float) -> Ranker:
    """The model as the engine serves it, with this recency decay."""

    def rank(cases: Sequence[Case]) -> list[list[str]]:
        model.recency_decay = decay
        return [model.recommend(held_history(c), {i for i, _ in c.history}, AT) for c in cases]

    return rank


def candidates(train: Sequence[Event]) -> dict[str, Ranker]:
    """Every setting tried, and the peers, fitted on `train`."""
    cosine = fit_recommender(train, K, IGNORE, table="cosine")
    table = (cosine.items, cosine.indptr, cosine.neighbours, cosine.weights)
    data = sorted_interactions(train, IGNORE)
    out: dict[str, Ranker] = {f"cosine, decay {d}": served(cosine, d) for d in DECAYS}
    out["peer popularity"] = popularity_ranker(data)
    out["peer item_knn"] = knn_ranker(data)
    out["peer item_knn_last5"] = knn_ranker(data, last=5)
    for lam in LAMBDAS:
        kept, b = ease_weights(data, lam)
        items, indptr, nbrs, wts = assemble(ease_rows(kept, b, K), table)
        model = Recommender("tune", "", items, indptr, nbrs, wts, cosine.popular, k=K)
        out.update({f"ease {lam:.0f}, decay {d}": served(model, d) for d in DECAYS})
        if lam == 500.0:
            out["peer ease"] = ease_ranker(data, weights=(kept, b))
    return out


def validate(name: str, workdir: Path, max_users: int | None) -> dict[str, Any] | str:
    found = events_file(name, workdir)
    if isinstance(found, str):
        return found
    events, _ = load(found)
    train, _test = leave_last_n(events, 5, IGNORE)  # the test split: never looked at here
    vtrain, vcases = leave_last_n(train, 5, IGNORE)
    vcases = sample(vcases, max_users)
    n_items = len(sorted_interactions(vtrain, IGNORE).items)
    results = {
        m: ranking_metrics(r(vcases), vcases, n_items) for m, r in candidates(vtrain).items()
    }
    return {"users": len(vcases), "items": n_items, "results": results}


def document(found: dict[str, dict[str, Any] | str], max_users: int | None) -> str:
    measured = {n: r for n, r in found.items() if isinstance(r, dict)}
    users = f" (at most {max_users} users a data set)" if max_users else ""
    lines = [
        "# How the default recommender was chosen: validation splits",
        "",
        f"Written by `python -m benchmarks.tune_recs`{users}. HR@10 on each data set's validation",
        "split: the training part of docs/evaluation.md's leave-last-5 split, each user's last 5",
        "distinct items of it held out again; the test split is never read. Persona's table as",
        f"served (the 30 most recent items, a recency decay); the default now: ease "
        f"{TABLE_LAMBDA:.0f}, decay {RECENCY_DECAY}.",
        "The OTTO fixture (8 test users) is too small to validate on.",
        "",
        "| setting | "
        + " | ".join(f"{n} ({r['users']} users)" for n, r in measured.items())
        + " | mean |",
        "|---" * (len(measured) + 2) + "|",
    ]
    first: dict[str, Any] = next(iter(measured.values()), {"results": {}})
    for setting in first["results"]:
        values = [r["results"][setting]["hr@10"] for r in measured.values()]
        cells = " | ".join(f"{v:.3f}" for v in values)
        lines.append(f"| {setting} | {cells} | {sum(values) / len(values):.3f} |")
    lines += [f"\n{n}: not measured: {r}" for n, r in found.items() if isinstance(r, str)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/evaluation-validation.md")
    parser.add_argument("--max-users", type=int)
    args = parser.parse_args(argv)
    sets = [d.name for d in SETS if "recs" in d.tasks and d.name != "otto_fixture"]
    with tempfile.TemporaryDirectory() as tmp:
        found = {name: validate(name, Path(tmp), args.max_users) for name in sets}
        print(f"[tune] {list(found)}", file=sys.stderr)
    Path(args.out).write_text(document(found, args.max_users))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
