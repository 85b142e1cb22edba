"""The dashboard's tiles, charts and process table in headless Chromium, drawn from the JSON of a
real `/v1/stats` (an app over the in-memory state, its figures made by real requests and the
real sampler's `tick`): what the figures say when the newest second was quiet, and how the
processes are named.

The page itself is the shipped dashboard.html and its scripts, loaded from the disk with the
JSON handed to its `draw` (the page's own polling needs a key and a clock the test cannot hold
still: a quiet newest second cannot be arranged against a page that polls, and is counted)."""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.observability import TELEMETRY, follow_peers
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.events import validate
from engine.process_stats import clean, process_label
from models.registry import ModelSet
from tests.api.test_app import AUTH, T0, ev, product
from tests.ui import browser

STATIC = Path(__file__).resolve().parents[2] / "api" / "static"
MODELS = ModelSet.default()
READER = "reader:http://127.0.0.1:8080:1:15995"  # a reader's id on the stats board
READER_LABEL = "reader 1 (pid 15995) on :8080"
DASH = "\u2013"  # what a tile shows for no value


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    state = MemoryState()
    for item in MODELS.recs.popular[:50]:
        state.put_product(product(item))
    await state.produce([validate(ev("u1", "product_view", MODELS.recs.popular[0], T0))])
    keys = KeyRing.from_settings("all:s3cret-kkkkkkkkkkkkkkkkk:content:read", None)
    content = ContentService(state, MODELS, Renderer(), BlockPolicy())
    async with TestClient(TestServer(create_app(content, keys))) as c:
        yield c


def _reader_snapshot(t: float) -> dict[str, Any]:
    """A reader's snapshot as it reaches the stats board: checked by `clean` on the way in."""
    return clean(
        {
            "process": READER,
            "label": READER_LABEL,
            "kind": "reader",
            "host": "shop-1",
            "t": t,
            "started": t - 60,
            "ready": True,
        }
    )


async def _stats_after_a_quiet_second(client: TestClient) -> dict[str, Any]:
    """`/v1/stats` whose newest point had no request and no cache lookup, an earlier one both."""
    app = client.server.app
    telemetry = app[TELEMETRY]
    telemetry.tick()
    telemetry.tick()  # a quiet second
    for _ in range(3):  # a miss, then hits: a cache hit rate, and latencies
        r = await client.get("/v1/users/u1/blocks/recommendations", headers=AUTH)
        assert r.status == 200
    telemetry.tick()
    telemetry.tick()  # quiet again: the newest point has neither (the sampler may add more)
    reader = _reader_snapshot(telemetry.snapshot()["t"])
    own = "worker:http://127.0.0.1:8081"  # as persona/stats_wiring.py names this process
    label = process_label("worker", "http://127.0.0.1:8081", os.getpid())
    follow_peers(app, own, "worker", lambda: [(None, reader)], label)
    r = await client.get("/v1/stats", headers=AUTH)
    assert r.status == 200
    stats: dict[str, Any] = await r.json()
    newest = stats["series"][-1]
    assert newest["latency_ms"]["p95"] is None and newest["cache_hit_rate"] is None, newest
    return stats


def _drawn(stats: dict[str, Any], tmp_path: Path) -> str:
    """The DOM of the shipped dashboard page after `draw(stats)`, signed in."""
    page = (STATIC / "dashboard.html").read_text()
    page = page.replace('"/ui/static/', f'"{STATIC.as_uri()}/')
    (tmp_path / "stats.js").write_text(f"const STATS = {json.dumps(stats)};\n")
    (tmp_path / "draw.js").write_text(
        'document.getElementById("app").classList.remove("hidden");\ndraw(STATS);\n'
    )
    extra = '<script src="stats.js"></script>\n<script src="draw.js"></script>\n</body>'
    (tmp_path / "dashboard.html").write_text(page.replace("</body>", extra))
    dom = browser.dom((tmp_path / "dashboard.html").as_uri(), budget_ms=2000)
    assert 'id="process-table"' in dom, dom[-3000:]
    return dom


def _tiles(dom: str) -> dict[str, str]:
    pairs = re.findall(r'<div class="v">([^<]*)</div><div class="k">([^<]*)</div>', dom)
    return {html.unescape(k): html.unescape(v) for v, k in pairs}


def _latest(stats: dict[str, Any], pick: Any) -> float:
    return next(pick(p) for p in reversed(stats["series"]) if pick(p) is not None)


async def test_the_p95_tile_shows_the_latest_known_p95_of_the_charts_window(
    client: TestClient, tmp_path: Path
) -> None:
    """The tile read the newest point only: a dash whenever the last second had no request, while
    the latency chart beside it had a p95. It shows the newest p95 of the chart's window, and
    how old it is when that is not the newest second."""
    browser.chromium()
    stats = await _stats_after_a_quiet_second(client)
    tiles = _tiles(_drawn(stats, tmp_path))
    (key,) = [k for k in tiles if k.startswith("p95 latency")]
    assert tiles[key] != DASH, tiles
    shown = float(tiles[key].removesuffix(" ms"))
    assert shown == pytest.approx(_latest(stats, lambda p: p["latency_ms"]["p95"]), abs=0.01)
    assert re.search(r"\d+ s ago", key), key  # not the newest second's: says how old


async def test_the_cache_hit_rate_chart_draws_a_lone_second(
    client: TestClient, tmp_path: Path
) -> None:
    """The block cache chart drew nothing while its legend read a rate: a second with lookups
    between quiet ones (null rate: no lookups) was a path of one "M" point, which draws nothing.
    A lone point is drawn as a dot; the legend gives the rate as the tiles do, in percent."""
    browser.chromium()
    stats = await _stats_after_a_quiet_second(client)
    dom = _drawn(stats, tmp_path)
    chart = re.search(r'<svg class="chart" id="chart-cache".*?</svg>', dom, re.S)
    assert chart, "no cache chart"
    for series in ("hit rate", "fallback rate"):
        tags = re.findall(rf'<(?:path|circle)\b[^>]*data-series="{series}"[^>]*>', chart.group(0))
        visible = [
            t for t in tags if t.startswith("<circle") or re.search(r'\bd="[^"]*L', t) is not None
        ]
        assert visible, f"{series}: nothing visible drawn in {chart.group(0)}"
    legend = re.search(r'<div class="legend" id="legend-cache">(.*?)</div>', dom, re.S)
    assert legend
    rate = _latest(stats, lambda p: p["cache_hit_rate"])
    assert f"hit rate {100 * rate:.0f}%" in html.unescape(re.sub(r"<[^>]+>", "", legend.group(1)))


async def test_processes_are_named_by_a_readable_label(client: TestClient, tmp_path: Path) -> None:
    """A reader showed as `reader:http://127.0.0.1:8080:1:15995` (its id on the stats board),
    which reads as a second port. The table shows the label each process publishes, its kind,
    number, pid and port; the id stays in the cell's title."""
    browser.chromium()
    stats = await _stats_after_a_quiet_second(client)
    rows = {p["process"]: p for p in stats["processes"]}
    assert rows[READER]["label"] == READER_LABEL
    dom = _drawn(stats, tmp_path)
    table = re.search(r'<table class="kv" id="process-table">.*?</table>', dom, re.S)
    assert table
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>([^<]*)</td>", table.group(0))]
    assert READER_LABEL in cells, cells
    assert f"worker (pid {os.getpid()}) on :8081 (this page)" in cells, cells
    assert not [c for c in cells if c.startswith(("reader:", "worker:"))], cells
