"""Training at scale (issue 21 item 4): a synthetic events file and the time and peak memory of
`persona models train recs` and `... churn` on it. Not a test: figures on a shared machine are
noisy.

The file (JSON lines, gzip): `--events` events (default 2M) of shoppers over `--items` items
(default 1M, Zipf-skewed, each shopper mostly near one "home" item), over 180 days in time order
(users interleaved, as a shop's export is), with views, carts and purchases (an order id per
session), plus `--heavy` users (default 3) with `--heavy-items` distinct items each (default
10,000): the users who made co-occurrence quadratic. Each training runs in a child process
(`persona models train MODEL --events FILE --out DIR`); its wall time and peak RSS come from
wait4. `--limit-gb` caps the child's address space (a run past it fails with MemoryError instead
of taking the shared machine's memory).

    nice .venv/bin/python -m benchmarks.train_scale [--events 2000000] [--items 1000000]
        [--file PATH] [--models recs,churn] [--limit-gb 6]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DAY_MS = 86_400_000
T0 = 1_735_689_600_000  # 2025-01-01
SPAN_DAYS = 180
KINDS = np.array(["product_view", "add_to_cart", "purchase"])
KIND_SHARE = (0.7, 0.15, 0.15)


def _zipf(rng: np.random.Generator, items: int, n: int) -> np.ndarray:
    cdf = np.cumsum(1.0 / np.arange(1, items + 1))
    return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n)), items - 1)


def _regular(rng: np.random.Generator, n: int, items: int) -> dict[str, np.ndarray]:
    """n events of ordinary shoppers (1-12 events each), their sessions days apart."""
    sizes = rng.integers(1, 13, n // 6 + 2)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
    user = np.repeat(np.arange(len(sizes)), sizes)[:n]
    first = np.r_[0, np.cumsum(sizes)[:-1]][user]
    start = rng.integers(0, SPAN_DAYS * DAY_MS, len(sizes))[user]
    new_session = (rng.random(n) < 0.3) & (np.arange(n) != first)
    session = np.cumsum(new_session | (np.arange(n) == first))
    gap = np.where(new_session, rng.integers(1, 15, n) * DAY_MS, 0)
    offset = _cumsum_within(gap, first) + (np.arange(n) - first) * 60_000
    home = rng.integers(0, items, len(sizes))[user]
    near = (home + _zipf(rng, items, n) * 7) % items
    item = np.where(rng.random(n) < 0.7, near, _zipf(rng, items, n))
    return {"user": user, "ts": T0 + start + offset, "item": item, "session": session}


def _cumsum_within(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    total = np.cumsum(values)
    return np.asarray(total - total[first] + values[first])


def _heavy(rng: np.random.Generator, users: int, per: int, items: int, base: int) -> dict[str, Any]:
    n = users * per
    user = base + np.repeat(np.arange(users), per)
    item = np.concatenate([rng.choice(items, per, replace=False) for _ in range(users)])
    ts = T0 + np.sort(rng.integers(0, SPAN_DAYS * DAY_MS, (users, per)), axis=1).ravel()
    session = 10**9 + user * 1000 + (ts - T0) // DAY_MS
    return {"user": user, "ts": ts, "item": item, "session": session[:n]}


def write_file(path: Path, events: int, items: int, heavy: int, heavy_items: int) -> int:
    rng = np.random.default_rng(21)
    regular = _regular(rng, events - heavy * heavy_items, items)
    base = int(regular["user"].max()) + 1
    parts = [regular, _heavy(rng, heavy, heavy_items, items, base)] if heavy else [regular]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    kind = rng.choice(len(KINDS), len(cols["ts"]), p=KIND_SHARE)
    order = np.argsort(cols["ts"], kind="stable")
    with gzip.open(path, "wt", compresslevel=1) as f:
        for n, j in enumerate(order.tolist()):
            row = {"event_id": f"e{n}", "type": str(KINDS[kind[j]]),
                   "user_id": f"u{cols['user'][j]}", "ts": int(cols["ts"][j]),
                   "item_id": f"i{cols['item'][j]}"}  # fmt: skip
            if kind[j] == 2:
                row.update(quantity=1, price=9.5, currency="GBP",
                           props={"order_id": f"o{cols['session'][j]}"})  # fmt: skip
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    return len(order)


def _limit(gb: float) -> None:
    size = int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (size, size))


def train(model: str, path: Path, out: Path, limit_gb: float, horizon: int) -> dict[str, Any]:
    """Wall and CPU seconds, peak RSS (MB) and the tail of the output of one training child."""
    cmd = [sys.executable, "-m", "persona", "models", "train", model, "--events", str(path),
           "--out", str(out), "--horizon-days", str(horizon)]  # fmt: skip
    began = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: _limit(limit_gb))  # fmt: skip
    out_bytes = proc.stdout.read() if proc.stdout else b""
    _pid, status, usage = os.wait4(proc.pid, 0)
    return {
        "model": model,
        "ok": os.waitstatus_to_exitcode(status) == 0,
        "seconds": round(time.monotonic() - began, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),  # the machine is shared
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "output_tail": out_bytes.decode(errors="replace")[-1500:],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--heavy", type=int, default=3)
    p.add_argument("--heavy-items", type=int, default=10_000)
    p.add_argument("--file", type=Path, help="reuse (or write) the events file here")
    p.add_argument("--models", default="recs,churn")
    p.add_argument("--limit-gb", type=float, default=6.0)
    p.add_argument("--horizon-days", type=int, default=90)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="persona-train-scale-"))
    path = args.file or tmp / "events.jsonl.gz"
    if not path.exists():
        began = time.monotonic()
        n = write_file(path, args.events, args.items, args.heavy, args.heavy_items)
        print(f"wrote {n:,} events to {path} in {time.monotonic() - began:.0f} s", flush=True)
    for model in args.models.split(","):
        result = train(model, path, tmp / model, args.limit_gb, args.horizon_days)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
