"""Observability: Prometheus metrics, request ids, structured (JSON) access logs, and the live
figures behind the dashboard (`GET /v1/stats`).

Everything here is cheap on the hot path: one middleware that stamps a request id, counts the
request in plain numbers (counts and latency buckets, exported at scrape time by `_HttpCollector`
under the names and samples prometheus-client's Counter and Histogram would write), and logs one
JSON line for every request except the successful ones on the hot content routes (blocks,
profile), which are logged 1 in `HOT_LOG_EVERY`. Stream figures (events, lag, dead letters,
triggers) are read from the state only when `/metrics` is scraped or the sampler ticks (once a
second).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import logging
import math
import os
import re
import secrets
import socket
import sys
import time
from bisect import bisect_left
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from api import fleet
from api.content import ContentService
from engine.blocks import Block, BlockCache
from engine.catalog import UNSAFE_PRODUCTS
from engine.clicks import logged_path
from engine.features import features
from engine.memo import SizedMemo
from engine.profile import Profile
from engine.room import Room

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BLOCK_ROUTE = "/v1/users/{user_id}/blocks/{block}"
HOT_ROUTES = frozenset({BLOCK_ROUTE, "/v1/users/{user_id}/profile"})
HOT_LOG_EVERY = 100  # log 1 in N successful requests on HOT_ROUTES (errors always)
# `persona run` counts the restarts of its children in this file of the data dir
# (persona/children.py); its worker and readers export them (`follow_restarts`).
RESTARTS_FILE = "restarts.json"
PROCESS_KINDS = frozenset({"worker", "reader", "broker"})
# Probes (load balancers, `persona run` waiting for readiness, Prometheus) poll all the time: their
# answers, 503s while starting included, are access-logged only at debug level.
PROBE_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
HISTORY = 300  # seconds of dashboard history kept (one point a second)
MAX_CLICK_KEYS = 200  # (block, variant) pairs whose clicks are counted (process_stats' bound)
CHURN_EVERY = 10  # seconds between churn-histogram refreshes
# Profiles scored for the churn histogram. The refresh runs on the event loop of the process that
# serves the dashboard (in a worker: the stream's loop), so it stays small: 500 profiles take
# ~20 ms, 2000 took ~80 ms, a stall the stream's freshness felt every few seconds.
CHURN_SAMPLE = 500
CHURN_EDGES = tuple(round(i / 10, 1) for i in range(11))  # 0.0, 0.1, ..., 1.0
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_PROBE_EVERY = 0.05  # seconds between event-loop lag probes
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_KEEP = 4096  # latencies kept per second for the dashboard's percentiles
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
access_log = logging.getLogger("persona.access")


class Seen(Protocol):
    """What the access log reads of a request: a `web.BaseRequest`, or the hot path's own
    record of a request it answered from the wire (api/hot.py)."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...


# -- logs ------------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id (inside a request), the
    record's `fields` (passed as `extra={"fields": {...}}`), and exc for tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def configure_json_logging(level: str = "info") -> None:
    """Persona's own loggers (`persona.*`) write JSON lines to stderr; libraries keep theirs."""
    logger = logging.getLogger("persona")
    for handler in list(logger.handlers):
        if isinstance(handler.formatter, JsonFormatter):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


# Request ids: a random per-process prefix and a counter (unique per process, no system call per
# request: reading the OS random source on every request cost ~5% of a block GET).
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def _request_id(header: str | None) -> str:
    if header and _REQUEST_ID_OK.fullmatch(header):
        return header
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def current_request_id() -> str:
    """The id of the request being answered (what its `X-Request-Id` answer says: the caller's
    valid one, or one made here), or a fresh one outside a request (`observe_middleware` not in
    the stack). A hop carries it to the owner (api/routing.py), which checks it as any caller's:
    the owner's answer and audit records name the id the caller was answered."""
    return request_id.get() or _request_id(None)


# -- figures ---------------------------------------------------------------------------------------


def percentiles(values: list[float], qs: Iterable[float] = (50, 95, 99)) -> list[float | None]:
    if not values:
        return [None for _ in qs]
    return [float(v) for v in np.percentile(np.asarray(values), list(qs))]


def churn_histogram(scores: Iterable[float]) -> list[int]:
    """Counts of scores per bin of CHURN_EDGES (the last bin includes 1.0)."""
    counts = [0] * (len(CHURN_EDGES) - 1)
    for score in scores:
        i = min(int(score * 10), len(counts) - 1)
        counts[max(i, 0)] += 1
    return counts


def stream_figures(content: ContentService) -> dict[str, Any]:
    """What the state tells about the stream (the worker's `StreamState.figures`); {} without."""
    figures = getattr(content.state, "figures", None)
    return dict(figures()) if callable(figures) else {}


def sample_profiles(content: ContentService, n: int) -> list[Profile]:
    sample = getattr(content.state, "sample_profiles", None)
    return list(sample(n)) if callable(sample) else []


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Telemetry:
    """Per-application metrics (own registry, so several apps can live in one process)."""

    def __init__(self, content: ContentService) -> None:
        self.content = content
        self.started = time.time()
        self.registry = CollectorRegistry(auto_describe=False)
        # The per-request figures are plain Python numbers, exported by `_HttpCollector` at scrape
        # time under the names prometheus-client's Counter/Histogram gave them: its label lookups,
        # locks and per-bucket objects cost ~4 us of a ~25 us block GET.
        self._http: dict[tuple[str, str, int], list[float]] = {}  # -> [count, created]
        self._latency: dict[str, list[float]] = {}  # route -> per-bucket counts, then sum
        self._created: dict[str, float] = {}  # route -> created (the latency histogram's)
        self._served: dict[tuple[str, str, bool], list[float]] = {}  # -> [count, created]
        self.registry.register(_HttpCollector(self))
        self.loop_lag = Histogram(
            "persona_event_loop_lag_seconds",
            f"How late a {LAG_PROBE_EVERY:g} s timer fired on this process's event loop (a stall "
            "of the loop delays the stream and every request alike).",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))
        self.restarts_file: Path | None = None  # `follow_restarts` sets it
        self.room: Room | None = None  # the data dir's free space (api/event_routes.py)
        # Prometheus text lines of other modules (rate limits, render), read at scrape time
        self.text_sources: list[Callable[[], list[str]]] = []
        self.requests = 0
        self.blocks = 0
        self.fallbacks = 0
        self.variants: dict[tuple[str, str], list[int]] = {}  # (block, variant) -> [served, fb]
        self.clicks: dict[str, int] = {}  # "block:variant" -> clicks recorded (api/clicks.py)
        self.batch_deadline_fallbacks = 0  # batch users past their deadline (api/batch.py)
        # per route: users of a batch or render whose owner failed, answered here (api/fanout.py)
        self.owner_fallbacks = {"/v1/blocks:batch": 0, "/v1/render": 0}
        self.latencies: list[float] = []
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.churn_counts: list[int] = [0] * (len(CHURN_EDGES) - 1)
        self.churn_sampled = 0
        self.churn_sum = 0.0
        self._previous: dict[str, Any] | None = None
        self._hot_seen = 0
        # the other processes' newest snapshots (api/fleet.py; `follow_peers` sets both)
        self.peers: Callable[[], list[fleet.Pair]] = list
        self.identity = {
            "process": f"process:{socket.gethostname()}",
            "kind": "worker",
            "label": f"worker (pid {os.getpid()})",
        }

    # -- the hot path --------------------------------------------------------------------------
    def observe(
        self, request: web.Request, response: web.StreamResponse | None, status: int, took: float
    ) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self.count(route, request.method, status, took)
        if response is not None and route == BLOCK_ROUTE and status in (200, 304):
            headers = response.headers
            self.count_block(
                request.match_info.get("block", ""),
                headers.get("X-Persona-Variant", "default"),
                headers.get("X-Persona-Fallback") == "1",
            )
        self._log(request, route, status, took)

    def observe_block(self, request: Seen, status: int, took: float, block: Block | None) -> None:
        """`observe` for a block GET answered with `block` (None: a refusal or an error) by the
        hot path (api/hot.py): the same figures, without reading them back from the headers."""
        self.count(BLOCK_ROUTE, "GET", status, took)
        if block is not None and status in (200, 304):
            self.count_block(block.block, block.variant, block.fallback)
        self._log(request, BLOCK_ROUTE, status, took)

    def count(self, route: str, method: str, status: int, took: float) -> None:
        """One request in the figures behind persona_http_requests and
        persona_http_request_duration_seconds (and the dashboard's)."""
        self.requests += 1
        if method not in METHODS:
            method = "OTHER"  # any token is a method: the label set stays bounded
        key = (route, method, status)
        counted = self._http.get(key)
        if counted is None:
            counted = self._http[key] = [0, time.time()]
        counted[0] += 1
        buckets = self._latency.get(route)
        if buckets is None:
            buckets = self._latency[route] = [0.0] * (len(LATENCY_BUCKETS) + 2)
            self._created[route] = time.time()
        buckets[bisect_left(LATENCY_BUCKETS, took)] += 1  # le: the first bound >= took
        buckets[-1] += took
        if len(self.latencies) < LATENCY_KEEP:
            self.latencies.append(took)

    def count_block(self, block: str, variant: str, fallback: bool) -> None:
        self.blocks += 1
        self.fallbacks += fallback
        key = (block, variant, fallback)
        served = self._served.get(key)
        if served is None:
            served = self._served[key] = [0, time.time()]
        served[0] += 1
        entry = self.variants.get((block, variant))
        if entry is None:
            entry = self.variants[(block, variant)] = [0, 0]
        entry[0] += 1
        entry[1] += fallback

    def count_click(self, block: str, variant: str) -> None:
        """A click recorded by the redirect (api/clicks.py), for the A/B panel."""
        key = f"{block}:{variant}"
        if key in self.clicks or len(self.clicks) < MAX_CLICK_KEYS:
            self.clicks[key] = self.clicks.get(key, 0) + 1

    def _log(self, request: Seen, route: str, status: int, took: float) -> None:
        if route in PROBE_ROUTES and (status < 500 or route == "/readyz"):
            if access_log.isEnabledFor(logging.DEBUG):
                access_log.debug("%s %s %s", request.method, logged_path(request.path), status)
            return
        if not access_log.isEnabledFor(logging.INFO):
            return
        if route in HOT_ROUTES and status < 400:
            self._hot_seen += 1
            if self._hot_seen % HOT_LOG_EVERY != 1:
                return
            sampled = HOT_LOG_EVERY
        else:
            sampled = 1
        path = logged_path(request.path)  # a click link's token never (engine/clicks.py)
        access_log.info(
            "%s %s %s",
            request.method,
            path,
            status,
            extra={
                "fields": {
                    "method": request.method,
                    "path": path,
                    "route": route,
                    "status": status,
                    "ms": round(took * 1000, 3),
                    "sample_rate": 1 / sampled,
                }
            },
        )

    # -- the sampler (once a second) -------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        cache = self.content.cache
        return {
            "t": time.time(),
            "stream": stream_figures(self.content),
            "hits": cache.hits,
            "misses": cache.misses,
            "requests": self.requests,
            "blocks": self.blocks,
            "fallbacks": self.fallbacks,
            "latency": self._latency_buckets(),
        }

    def _latency_buckets(self) -> list[float]:
        """Requests per latency bucket over every route (the last: beyond the last bound)."""
        counts = [0.0] * (len(LATENCY_BUCKETS) + 1)
        for per_route in list(self._latency.values()):
            for i, n in enumerate(per_route[:-1]):
                counts[i] += n
        return counts

    def published(self) -> dict[str, Any]:
        """This process's cumulative figures, for every other process's dashboard
        (engine/process_stats.py checks them on the way in, api/fleet.py merges them)."""
        figures = stream_figures(self.content)
        ready, detail = self.content.state.ready()
        now = self.snapshot()
        return {
            **self.identity,
            "host": socket.gethostname(),
            "started": self.started,
            "ready": ready,
            "ready_detail": detail,
            "models": self.content.models.versions(),
            "stream": {name: dict(figures.get(name, {})) for name in fleet.STREAM_MAPS},
            **{name: now[name] for name in ("t", *fleet.COUNTS, "latency")},
            "variants": {f"{b}:{v}": list(n) for (b, v), n in self.variants.items()},
            "clicks": dict(self.clicks),
            "churn": {
                "counts": self.churn_counts,
                "sampled": self.churn_sampled,
                "sum": self.churn_sum,
            },
        }

    def tick(self) -> dict[str, Any] | None:
        """Take a snapshot; append the point (rates since the previous one) to the history."""
        now = self.snapshot()
        latencies, self.latencies = self.latencies, []
        previous, self._previous = self._previous, now
        if previous is None:
            return None
        point = make_point(previous, now, latencies)
        bounds = list(LATENCY_BUCKETS)
        point = fleet.merged_point(
            point, (previous, now), self.peers(), now["t"], make_point, bounds
        )
        self.history.append(point)
        return point

    def refresh_churn(self) -> None:
        # users without personalization consent are not scored (engine.consent)
        profiles = [
            p for p in sample_profiles(self.content, CHURN_SAMPLE) if self.content.personal(p)
        ]
        if not profiles:
            return
        now = self.content.state.now_ms()
        matrix = np.array([features(p, now) for p in profiles], dtype=np.float64)
        scores = self.content.models.churn.score_batch(matrix)
        self.churn_counts = churn_histogram(float(s) for s in scores)
        self.churn_sampled = len(profiles)
        self.churn_sum = float(np.sum(scores))

    # -- the dashboard's JSON --------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The whole engine's figures: this process's and every other live process's
        (api/fleet.py), with the processes they come from."""
        figures = stream_figures(self.content)
        own, peers = self.published(), self.peers()
        merged = fleet.totals([own, *(last for _, last in peers)])
        counters, looked = merged["stream"]["counters"], merged["hits"] + merged["misses"]
        variants = {tuple(k.split(":", 1)): v for k, v in merged["variants"].items()}
        return {
            "generated": time.time(),
            "uptime_s": round(time.time() - self.started, 1),
            "ready": own["ready"],
            "ready_detail": own["ready_detail"],
            "models": own["models"],
            "series": list(self.history),
            "totals": {
                "events": counters.get("events_processed", 0),
                "duplicates": counters.get("events_duplicate", 0),
                "dead_lettered": counters.get("events_dead_lettered", 0),
                "catalog_updates": counters.get("catalog_updates", 0),
                "consumed": merged["stream"]["consumed"],
                "lag": merged["stream"]["lag"],
                "requests": merged["requests"],
                "cache_hit_rate": merged["hits"] / looked if looked else None,
                "fallback_rate": merged["fallbacks"] / merged["blocks"]
                if merged["blocks"]
                else None,
                "blocks": merged["blocks"],
            },
            "churn": {"edges": list(CHURN_EDGES), **merged["churn"]},
            "triggers": merged["stream"]["triggers"],
            # recorded but not sent: older than PERSONA_TRIGGER_MAX_AGE_HOURS (streams/triggers.py)
            "triggers_stale": merged["stream"]["triggers_stale"],
            "experiments": self.experiments(figures, variants, merged["clicks"]),
            "processes": fleet.processes(own, peers, own["t"]),
        }

    def experiments(
        self,
        figures: dict[str, Any],
        variants: dict[Any, Any] | None = None,
        clicks: dict[str, float] | None = None,
    ) -> list[dict[str, Any]]:
        """A/B results: per block, the variants served (`variants`: every process's, by
        default this one's), their fallback share and the clicks on their links (`clicks`,
        "block:variant" -> clicks; by default this one's) per block served (a block with one
        variant is no experiment). The stream may add conversions per variant."""
        clicked = self.clicks if clicks is None else clicks
        conversions: dict[str, int] = figures.get("conversions_by_variant", {})
        by_block: dict[str, list[dict[str, Any]]] = {}
        served_by = self.variants if variants is None else variants
        for (block, variant), (served, fallback) in sorted(served_by.items()):
            by_block.setdefault(block, []).append(
                {
                    "variant": variant,
                    "served": served,
                    "fallback_rate": fallback / served if served else None,
                    "clicks": clicked.get(f"{block}:{variant}", 0),
                    "click_rate": clicked.get(f"{block}:{variant}", 0) / served if served else None,
                    "conversions": conversions.get(f"{block}:{variant}"),
                }
            )
        return [
            {"block": block, "variants": variants}
            for block, variants in by_block.items()
            if len(variants) > 1
        ]


def make_point(
    previous: dict[str, Any], now: dict[str, Any], latencies: list[float]
) -> dict[str, Any]:
    """One dashboard point: per-second rates between two snapshots, percentiles of `latencies`."""
    dt = max(now["t"] - previous["t"], 1e-6)
    stream, before = now["stream"], previous["stream"]
    consumed, consumed_before = stream.get("consumed", {}), before.get("consumed", {})
    hits = now["hits"] - previous["hits"]
    misses = now["misses"] - previous["misses"]
    blocks = now["blocks"] - previous["blocks"]
    p50, p95, p99 = percentiles([x * 1000 for x in latencies])
    return {
        "t": round(now["t"], 3),
        "events_per_s": {
            topic: round((n - consumed_before.get(topic, 0)) / dt, 2)
            for topic, n in sorted(consumed.items())
        },
        "lag": dict(stream.get("lag", {})),
        "dead_lettered": stream.get("counters", {}).get("events_dead_lettered", 0),
        "triggers": sum(stream.get("triggers", {}).values()),
        "cache_hit_rate": hits / (hits + misses) if hits + misses else None,
        "fallback_rate": (now["fallbacks"] - previous["fallbacks"]) / blocks if blocks else None,
        "requests_per_s": round((now["requests"] - previous["requests"]) / dt, 2),
        "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
    }


class _HttpCollector(Collector):
    """The per-request figures (`Telemetry.count`, `count_block`) as Prometheus families, the
    same samples prometheus-client's Counter and Histogram wrote for them."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        t = self.telemetry
        requests = CounterMetricFamily(
            "persona_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), (count, created) in list(t._http.items()):
            requests.add_metric([route, method, str(status)], count, created=created)
        yield requests
        latency = HistogramMetricFamily(
            "persona_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            labels=["route"],
        )
        for route, counts in list(t._latency.items()):
            running = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*LATENCY_BUCKETS, math.inf), counts, strict=False):
                running += count
                buckets.append((floatToGoString(bound), running))
            latency.add_metric([route], buckets, counts[-1])
            latency.samples.append(
                Sample(latency.name + "_created", {"route": route}, t._created[route])
            )
        yield latency
        served = CounterMetricFamily(
            "persona_blocks_served",
            "Content blocks answered, by block, variant and whether it was the fallback.",
            labels=["block", "variant", "fallback"],
        )
        for (block, variant, fallback), (count, created) in list(t._served.items()):
            served.add_metric([block, variant, "1" if fallback else "0"], count, created=created)
        yield served
        yield _counter(
            "persona_http_batch_deadline_fallbacks",
            "Users of POST /v1/blocks:batch answered with the fallback because the request's "
            "deadline_ms (or its share of the request timeout) had passed before their blocks "
            "were computed.",
            t.batch_deadline_fallbacks,
        )
        yield _labelled(
            "persona_http_batch_owner_fallbacks",
            "Users of POST /v1/blocks:batch and recipients of POST /v1/render (by route) whose "
            "profiles partition another worker owns that were answered here (from a standby copy, "
            "or the fallback) because that worker failed, answered something unusable or ran out "
            "of time (api/fanout.py).",
            "route",
            t.owner_fallbacks,
        )


class _StateCollector(Collector):
    """Figures read at scrape time: the stream, the block cache, the models, the churn sample."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        content = self.telemetry.content
        figures = stream_figures(content)
        yield from _stream_metrics(figures)
        yield from _restart_metrics(self.telemetry.restarts_file)
        yield from _room_metrics(self.telemetry.room)
        legacy = getattr(content.state, "metrics", None)  # a state's own Prometheus text lines
        sources = [*self.telemetry.text_sources, *([legacy] if callable(legacy) else [])]
        for lines in sources:
            yield from text_string_to_metric_families("\n".join(lines()) + "\n")
        cache = content.cache
        yield _counter("persona_block_cache_hits", "Block cache hits.", cache.hits)
        yield _counter("persona_block_cache_misses", "Block cache misses (renders).", cache.misses)
        entries = GaugeMetricFamily("persona_block_cache_entries", "Blocks held in the cache.")
        entries.add_metric([], len(cache))
        yield entries
        yield from _cache_metrics(content)
        yield _counter(
            "persona_template_errors",
            "Template errors answered with the fallback.",
            content.renderer.errors,
        )
        yield _counter(
            "persona_catalog_unsafe_urls",
            "Stored products left out of blocks and feeds because their url or image_url holds "
            "a user name before '@' (each counted and logged once).",
            UNSAFE_PRODUCTS.count,
        )
        yield _counter(
            "persona_blocks_oversized",
            "Block renders past the template output budget (1 MiB), answered with fewer items.",
            content.renderer.oversized,
        )
        ready = GaugeMetricFamily("persona_ready", "1 when tables are recovered and models loaded.")
        ready.add_metric([], 1.0 if content.state.ready()[0] else 0.0)
        yield ready
        info = GaugeMetricFamily(
            "persona_model_info",
            "The model versions serving (value 1).",
            labels=["name", "version"],
        )
        for name, version in sorted(content.models.versions().items()):
            info.add_metric([name, version], 1.0)
        yield info
        t = self.telemetry
        buckets: list[tuple[str, float]] = []
        running = 0
        for edge, count in zip(CHURN_EDGES[1:], t.churn_counts, strict=True):
            running += count
            buckets.append(("+Inf" if edge >= 1.0 else str(edge), float(running)))
        yield GaugeHistogramMetricFamily(
            "persona_churn_score",
            f"Churn scores of a sample of up to {CHURN_SAMPLE} profiles (refreshed every "
            f"{CHURN_EVERY} s).",
            buckets=buckets,
            gsum_value=t.churn_sum,
        )


def _cache_metrics(content: ContentService) -> Iterator[Metric]:
    """Entries and accounted bytes of the content service's caches, by cache (`blocks`,
    `param_blocks`: blocks with request parameters, `scores`), beside their bounds."""
    caches: dict[str, BlockCache | SizedMemo[Any, Any]] = {
        "blocks": content.cache,
        "param_blocks": content.param_cache,
        "scores": content.scores_memo,
    }
    held = GaugeMetricFamily(
        "persona_cache_entries", "Entries a content cache holds.", labels=["cache"]
    )
    accounted = GaugeMetricFamily(
        "persona_cache_bytes", "Accounted bytes a content cache holds.", labels=["cache"]
    )
    bound = GaugeMetricFamily(
        "persona_cache_max_bytes", "The accounted bytes a content cache may hold.", labels=["cache"]
    )
    for name, cache in caches.items():
        held.add_metric([name], len(cache))
        accounted.add_metric([name], cache.bytes)
        bound.add_metric([name], cache.max_bytes)
    yield from (held, accounted, bound)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _labelled(name: str, doc: str, label: str, values: dict[str, Any]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], float(value))
    return family


# Descriptions of the stream's counters (`figures()["counters"]`, each `persona_<name>_total`);
# a counter the stream adds without one here is still exported, with a generic description.
COUNTER_HELP = {
    "events_processed": "Events folded into profiles.",
    "events_duplicate": "Events ignored as repeats of a seen event_id.",
    "events_dead_lettered": "Messages sent to dead-letters.",
    "events_rekeyed": "Events re-keyed through the repartition topic.",
    "events_late": "Events beyond the lateness bound (dead-lettered).",
    "events_future": "Events too far ahead of the wall clock (dead-lettered as future).",
    "events_redelivered": "Records skipped as already folded (below their stored position).",
    "events_gap_read": "Records Faust did not deliver, read from the broker and folded.",
    "users_erased": "Erasures applied.",
    "events_fenced": "Events of an erased user, produced before the erasure, not folded.",
    "identity_merged": "Anonymous profiles merged into a user (identify).",
    "identity_repeated": "Merge records of an anonymous profile already merged (unchanged).",
    "identity_forwarded": "Events of an id merged into a user, forwarded to the user.",
    "catalog_updates": "Catalog updates applied.",
    "catalog_kept_unverified": (
        "Catalog records marked kept whose mark did not verify: applied, not passed over."
    ),
    "changelog_unkeyed": "Table changelog records without a key (not Persona's): passed over.",
}


def _read_restarts(path: Path | None) -> dict[str, dict[str, int]] | None:
    """`{"restarts": {kind: n}, "last_exit": {kind: code}}` from `persona run`'s file, or None."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_bytes()[:65536])
    except (OSError, ValueError):
        return None  # not under `persona run`, or a file caught mid-way: no figures this scrape
    if not isinstance(data, dict):
        return None
    return {part: _per_kind(data.get(part)) for part in ("restarts", "last_exit")}


def _per_kind(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if k in PROCESS_KINDS and type(v) is int}


def _restart_metrics(path: Path | None) -> Iterator[Metric]:
    status = _read_restarts(path)
    if status is None:
        return
    yield _labelled(
        "persona_process_restarts",
        "Children `persona run` restarted after they died, by kind (worker, reader, broker).",
        "process",
        status["restarts"],
    )
    last = GaugeMetricFamily(
        "persona_process_last_exit_code",
        "How the last child of each kind that died ended: its exit code, or minus the signal.",
        labels=["process"],
    )
    for kind, code in sorted(status["last_exit"].items()):
        last.add_metric([kind], float(code))
    yield last


def _room_metrics(room: Room | None) -> Iterator[Metric]:
    """The data dir's free bytes, read now (none without a data dir, or when it cannot be read)."""
    if room is None:
        return
    free = room.read()
    if free is None:
        return
    yield GaugeMetricFamily(
        "persona_data_dir_free_bytes",
        "Bytes still free on the data dir's file system (for this user). Under "
        f"{room.min_free >> 20} MiB, POST /v1/events and /v1/collect answer "
        "503 and a worker that died is not restarted until there is room.",
        value=float(free),
    )


def _stream_metrics(figures: dict[str, Any]) -> Iterator[Metric]:
    if not figures:
        return
    for name, value in sorted(figures.get("counters", {}).items()):
        yield _counter(f"persona_{name}", COUNTER_HELP.get(name, f"Stream counter {name}."), value)
    yield _labelled(
        "persona_messages_consumed",
        "Messages consumed per input topic.",
        "topic",
        figures.get("consumed", {}),
    )
    lag = GaugeMetricFamily(
        "persona_consumer_lag",
        "Messages behind the end of the input topics (this worker's partitions).",
        labels=["topic"],
    )
    for topic, value in sorted(figures.get("lag", {}).items()):
        lag.add_metric([topic], float(value))
    yield lag
    if "worker_lag_records" in figures:  # a worker's (not a reader's): what it must catch up
        yield GaugeMetricFamily(
            "persona_worker_lag_records",
            "Input records of this worker's partitions past the positions its state reaches.",
            value=float(figures["worker_lag_records"]),
        )
    if "topics_mismatched" in figures:  # a worker's
        mismatched = GaugeMetricFamily(
            "persona_topic_partitions_mismatched",
            "Partitions of an input topic whose count differs from PERSONA_PARTITIONS (the "
            "topic re-created since start-up): records on partitions past it are not read.",
            labels=["topic"],
        )
        for topic, count in sorted(figures["topics_mismatched"].items()):
            mismatched.add_metric([topic], float(count))
        yield mismatched
    yield _labelled(
        "persona_triggers_emitted",
        "Automation triggers produced to the triggers topic.",
        "trigger",
        figures.get("triggers", {}),
    )
    yield _labelled(
        "persona_triggers_stale",
        "Automation triggers recorded but not sent: what they are about is older than "
        "PERSONA_TRIGGER_MAX_AGE_HOURS against the wall clock (a replay of old events).",
        "trigger",
        figures.get("triggers_stale", {}),
    )


# -- the aiohttp side ------------------------------------------------------------------------------

TELEMETRY = web.AppKey("telemetry", Telemetry)


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = _request_id(request.headers.get("X-Request-Id"))
    token = request_id.set(rid)
    started = time.perf_counter()
    telemetry = request.app[TELEMETRY]
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and the like; errors are problems by now
        exc.headers["X-Request-Id"] = rid
        telemetry.observe(request, None, exc.status, time.perf_counter() - started)
        raise
    finally:
        request_id.reset(token)
    response.headers["X-Request-Id"] = rid
    telemetry.observe(request, response, response.status, time.perf_counter() - started)
    return response


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[TELEMETRY].registry)
    return web.Response(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[TELEMETRY].stats())


async def _sampler(app: web.Application) -> AsyncIterator[None]:
    telemetry = app[TELEMETRY]

    async def loop() -> None:
        n = 0
        while True:
            try:
                telemetry.tick()
                if n % CHURN_EVERY == 0:
                    telemetry.refresh_churn()
            except Exception:
                logging.getLogger("persona.api").exception("dashboard sampler failed")
            n += 1
            await asyncio.sleep(1.0)

    async def lag_probe() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_EVERY)
            telemetry.loop_lag.observe(max(0.0, time.perf_counter() - started - LAG_PROBE_EVERY))

    tasks = [asyncio.create_task(loop()), asyncio.create_task(lag_probe())]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def follow_restarts(app: web.Application, data_dir: Path) -> None:
    """Export the restarts `persona run` counts in `data_dir` (`persona_process_restarts_total`)."""
    app[TELEMETRY].restarts_file = data_dir / RESTARTS_FILE


def register(app: web.Application, content: ContentService) -> None:
    """`/metrics`, `/v1/stats` and the once-a-second sampler."""
    app[TELEMETRY] = Telemetry(content)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/v1/stats", get_stats)
    app.cleanup_ctx.append(_sampler)


def follow_peers(
    app: web.Application,
    process: str,
    kind: str,
    peers: Callable[[], list[fleet.Pair]],
    label: str = "",
) -> None:
    """Name this process in what it publishes (`Telemetry.published`: its id `process` and the
    `label` pages show, engine.process_stats.process_label) and merge the other processes'
    snapshots `peers` gives into its dashboard (`/v1/stats`, api/fleet.py)."""
    telemetry = app[TELEMETRY]
    telemetry.identity = {"process": process, "kind": kind, "label": label or process}
    telemetry.peers = peers
