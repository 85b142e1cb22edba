"""The whole engine on any process's dashboard (issue 18 item 7): this process's figures merged
with the newest stats snapshot of every other live worker and reader.

Each process publishes cumulative figures (`Telemetry.published`, checked on the way in by
engine/process_stats.py, carried by streams/stats_board.py); the wiring in persona/ hands the
live ones to `Telemetry.peers` as (previous, newest) pairs. Pure functions over those dicts:
- a point a second: this process's own point (as before, from its exact latencies) when it is
  alone; with peers, rates are summed (a peer's from the difference of its two newest snapshots,
  0 once its newest is older than `RATES_FOR`: it publishes every 2 s while anything changes),
  the cache and fallback rates are the ratio of the summed rates, and the latency percentiles
  are read from the summed latency buckets (interpolated within a bucket, as Prometheus'
  histogram_quantile does);
- totals: sums of the newest snapshots (stream counters, consumption, lag, triggers, requests,
  cache, blocks, variants); the churn histogram of the largest sample (workers and readers read
  the same profiles: their samples are not added up);
- the processes behind the figures, each with its kind, host and the age of its figures.
Ages and freshness compare a snapshot's time (the publisher's clock) with this process's clock:
machines whose clocks differ by more than `RATES_FOR` show each other's totals but no rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from engine.process_stats import STREAM_MAPS

Snapshot = dict[str, Any]
Pair = tuple[Snapshot | None, Snapshot]  # a process's previous and newest snapshot
Point = dict[str, Any]
PointFn = Callable[[Snapshot, Snapshot, list[float]], Point]

RATES_FOR = 5.0  # seconds a peer's rates are shown after its newest snapshot
SUMMED = ("dead_lettered", "triggers", "requests_per_s")
COUNTS = ("hits", "misses", "requests", "blocks", "fallbacks")


def merged_point(
    own: Point, own_pair: Pair, peers: list[Pair], now: float, point: PointFn, bounds: list[float]
) -> Point:
    """The dashboard's point for the whole engine (`own`: this process's, `point`: make_point,
    `bounds`: the latency buckets' upper bounds in seconds)."""
    if not peers:
        return own
    fresh = [(own_pair, True), *((p, _fresh(p, now)) for p in peers)]
    points = [own, *(_peer_point(p, ok, point) for p, ok in fresh[1:])]
    rates = [_rates(pair, ok) for pair, ok in fresh]
    merged = dict(own)
    merged["events_per_s"] = _sum_maps(p["events_per_s"] for p in points)
    merged["lag"] = _sum_maps(p["lag"] for p in points)
    for name in SUMMED:
        merged[name] = round(sum(p[name] or 0 for p in points), 2)
    total = {name: sum(r[name] for r in rates) for name in ("hits", "misses", "blocks", "fb")}
    looked = total["hits"] + total["misses"]
    merged["cache_hit_rate"] = total["hits"] / looked if looked else None
    merged["fallback_rate"] = total["fb"] / total["blocks"] if total["blocks"] else None
    buckets = [0.0] * (len(bounds) + 1)
    for r in rates:  # a quiet peer has none
        for i, n in enumerate(r["latency"][: len(buckets)]):
            buckets[i] += n
    merged["latency_ms"] = latency_percentiles(buckets, bounds)
    return merged


def _fresh(pair: Pair, now: float) -> bool:
    return pair[0] is not None and now - pair[1]["t"] <= RATES_FOR


def _peer_point(pair: Pair, fresh: bool, point: PointFn) -> Point:
    previous, last = pair
    return point(previous if fresh and previous is not None else last, last, [])


def _rates(pair: Pair, fresh: bool) -> dict[str, Any]:
    """Per-second rates of a process's cache, blocks and latency buckets (0 when not fresh)."""
    previous, last = pair
    if not fresh or previous is None:
        return {"hits": 0.0, "misses": 0.0, "blocks": 0.0, "fb": 0.0, "latency": []}
    dt = max(last["t"] - previous["t"], 1e-6)
    per = {name: (last[name] - previous[name]) / dt for name in COUNTS}
    before = previous.get("latency", [])
    latency = [
        max(0.0, (n - (before[i] if i < len(before) else 0)) / dt)
        for i, n in enumerate(last.get("latency", []))
    ]
    return {**per, "fb": per["fallbacks"], "latency": latency}


def latency_percentiles(
    buckets: list[float], bounds: list[float], qs: Iterable[int] = (50, 95, 99)
) -> dict[str, float | None]:
    """p50/p95/p99 in ms from per-bucket counts (the last bucket: beyond the last bound)."""
    total = sum(buckets)
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{q}"] = None if total <= 0 else _quantile(buckets, bounds, total * q / 100) * 1000
    return out


def _quantile(buckets: list[float], bounds: list[float], rank: float) -> float:
    seen = 0.0
    for i, count in enumerate(buckets):
        if count > 0 and seen + count >= rank:
            if i >= len(bounds):  # beyond the last bound: the last bound is all we know
                return bounds[-1]
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * (rank - seen) / count
        seen += count
    return bounds[-1]


def _sum_maps(maps: Iterable[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for values in maps:
        for key, value in values.items():
            out[key] = out.get(key, 0) + (value or 0)
    return {k: round(v, 2) for k, v in sorted(out.items())}


def totals(snapshots: list[Snapshot]) -> dict[str, Any]:
    """The engine's totals from the newest snapshot of every live process (this one's first)."""
    stream = {
        name: _sum_maps(s.get("stream", {}).get(name, {}) for s in snapshots)
        for name in STREAM_MAPS
    }
    variants: dict[str, list[float]] = {}
    for s in snapshots:
        for key, (served, fallback, *_) in s.get("variants", {}).items():
            found = variants.setdefault(key, [0, 0])
            found[0] += served
            found[1] += fallback
    churn = max((s["churn"] for s in snapshots), key=lambda c: c.get("sampled", 0))
    counts = {name: sum(s.get(name, 0) for s in snapshots) for name in COUNTS}
    clicks = _sum_maps(s.get("clicks", {}) for s in snapshots)  # "block:variant" -> clicks
    return {"stream": stream, "variants": variants, "clicks": clicks, "churn": churn, **counts}


def processes(own: Snapshot, peers: list[Pair], now: float) -> list[dict[str, Any]]:
    """Who the figures come from: this process first, then the others by kind and id."""
    others = sorted((_row(last, now, False) for _, last in peers), key=_by_kind)
    return [_row(own, now, True), *others]


def _by_kind(row: dict[str, Any]) -> tuple[str, str]:
    return row["kind"], row["process"]


def _row(s: Snapshot, now: float, this: bool) -> dict[str, Any]:
    counters = s.get("stream", {}).get("counters", {})
    return {
        "process": s.get("process", ""),  # its id on the stats board
        "label": s.get("label") or s.get("process", ""),  # how a page names it
        "kind": s.get("kind", ""),
        "host": s.get("host", ""),
        "this": this,
        "age_s": round(max(0.0, now - s["t"]), 1) if math.isfinite(s["t"]) else None,
        "ready": s.get("ready", False),
        "ready_detail": s.get("ready_detail", ""),
        "events": counters.get("events_processed", 0),
        "requests": s.get("requests", 0),
    }
