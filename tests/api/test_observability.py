"""Metrics (Prometheus text via prometheus-client), request ids, sampled JSON access logs, and the
dashboard's stats route, over the in-memory state."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from api.app import CONTENT, create_app
from api.auth import KeyRing
from api.content import ContentService
from api.observability import (
    HOT_LOG_EVERY,
    TELEMETRY,
    JsonFormatter,
    churn_histogram,
    make_point,
    request_id,
)
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.events import validate
from models.registry import ModelSet
from tests.api.test_app import AUTH, T0, ev, product

KEPT_NAMES = (
    "persona_events_processed_total",
    "persona_events_duplicate_total",
    "persona_events_dead_lettered_total",
    "persona_catalog_updates_total",
    "persona_block_cache_hits_total",
    "persona_block_cache_misses_total",
)


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    state = MemoryState()
    for item in ModelSet.default().recs.popular[:30]:
        state.put_product(product(item))
    await state.produce([validate(ev("u1", "product_view", "85123A", T0))])
    keys = KeyRing.from_settings("all:s3cret-kkkkkkkkkkkkkkkkk:content:read,events:write", None)
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    async with TestClient(TestServer(create_app(content, keys))) as c:
        yield c


def families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


async def test_metrics_are_prometheus_text_with_the_kept_names(client: TestClient) -> None:
    for _ in range(3):
        await client.get("/v1/users/u1/blocks/recommendations", headers=AUTH)
    await client.get("/v1/users/nobody/blocks/winback?format=json", headers=AUTH)
    r = await client.get("/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await r.text()
    for name in KEPT_NAMES:
        assert any(line.startswith(name + " ") for line in text.splitlines()), name
    found = families(text)  # parses: valid exposition format
    assert all(name.startswith("persona_") for name in found)
    assert "persona_block_cache_hits_total 2.0" in text
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in found["persona_http_requests"]
        if s.name.endswith("_total")
    }
    assert requests[("/v1/users/{user_id}/blocks/{block}", "200")] == 4
    buckets = [s for s in found["persona_http_request_duration_seconds"] if "le" in s.labels]
    assert buckets and max(s.value for s in buckets) >= 4
    served = {
        (s.labels["block"], s.labels["fallback"]): s.value
        for s in found["persona_blocks_served"]
        if s.name.endswith("_total")
    }
    assert served == {("recommendations", "0"): 3, ("winback", "1"): 1}
    assert {s.labels["name"] for s in found["persona_model_info"]} == {"churn", "recs"}
    for name in ("persona_consumer_lag", "persona_messages_consumed", "persona_churn_score"):
        assert name in found


async def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    r = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    made = r.headers["X-Request-Id"]
    assert made != "bad id\twith spaces" and len(made) == 16
    r = await client.get("/v1/users/u1/profile")  # 401s carry one too
    assert r.status == 401 and r.headers["X-Request-Id"]


async def test_access_log_is_json_and_sampled_on_hot_routes(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="persona.access")
    n = HOT_LOG_EVERY * 2
    for _ in range(n):
        await client.get("/v1/users/u1/blocks/recommendations", headers=AUTH)
    await client.get("/v1/users/u1/blocks/nope", headers=AUTH)  # an error: always logged
    await client.get("/readyz")  # a probe: access-logged at debug level only
    await client.get("/openapi.json", headers={"X-Request-Id": "rid-1"})  # not hot: logged
    records = [r for r in caplog.records if r.name == "persona.access"]
    assert not [r for r in records if r.fields["route"] in ("/readyz", "/healthz")]
    hot = [r for r in records if r.fields["route"] == "/v1/users/{user_id}/blocks/{block}"]
    assert len(hot) == 2 + 1
    assert {r.fields["sample_rate"] for r in hot} == {1 / HOT_LOG_EVERY, 1}
    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["route"] == "/openapi.json" and line["status"] == 200 and line["level"] == "info"
    assert line["msg"] == "GET /openapi.json 200" and "ms" in line


async def test_a_block_gets_access_line_carries_its_request_id(client: TestClient) -> None:
    """Block GETs are answered ahead of the application's chain (api/hot.py): their access
    lines (and refusal audits) were written after the request's id was taken out of the
    context, so the JSON line had no `request_id` though the answer carried one."""
    lines: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:  # formatted now, as stderr is
            lines.append(json.loads(JsonFormatter().format(record)))

    keep = Keep()
    logger = logging.getLogger("persona.access")
    logger.addHandler(keep)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for n in range(HOT_LOG_EVERY + 1):  # sampled: at least one is logged
            headers = {**AUTH, "X-Request-Id": f"hot-{n}"}
            r = await client.get("/v1/users/u1/blocks/recommendations", headers=headers)
            assert r.status == 200 and r.headers["X-Request-Id"] == f"hot-{n}"
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    hot = [line for line in lines if line["route"] == "/v1/users/{user_id}/blocks/{block}"]
    assert hot and all(line.get("request_id", "").startswith("hot-") for line in hot), hot


def test_json_formatter_carries_the_request_id() -> None:
    token = request_id.set("r-42")
    try:
        record = logging.LogRecord("persona.x", logging.WARNING, "f", 1, "hi %s", ("there",), None)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert line == {**line, "msg": "hi there", "request_id": "r-42", "level": "warning"}


async def test_stats_route_feeds_the_dashboard(client: TestClient) -> None:
    assert (await client.get("/v1/stats")).status == 401
    telemetry = client.server.app[TELEMETRY]
    telemetry.tick()
    await client.get("/v1/users/u1/blocks/recommendations", headers=AUTH)
    await client.get("/v1/users/u1/blocks/recommendations", headers=AUTH)
    telemetry.tick()
    telemetry.refresh_churn()
    r = await client.get("/v1/stats", headers=AUTH)
    stats = await r.json()
    point = stats["series"][-1]
    assert point["requests_per_s"] > 0 and point["cache_hit_rate"] == 0.5
    assert point["latency_ms"]["p50"] is not None and point["events_per_s"] == {"clickstream": 0}
    assert stats["totals"]["events"] == 1 and stats["totals"]["blocks"] == 2
    assert stats["churn"]["sampled"] == 1 and sum(stats["churn"]["counts"]) == 1
    assert stats["ready"] is True and set(stats["models"]) == {"churn", "recs"}
    assert stats["experiments"] == [] and stats["triggers"] == {}


def test_churn_histogram_and_points() -> None:
    assert churn_histogram([0.0, 0.05, 0.1, 0.55, 0.99, 1.0]) == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    before = {"t": 10.0, "stream": {"consumed": {"cart": 5}}, "hits": 0, "misses": 0}
    before |= {"requests": 0, "blocks": 0, "fallbacks": 0}
    after = {
        "t": 12.0,
        "stream": {"consumed": {"cart": 25}, "lag": {"cart": 3}, "triggers": {"churn_risk": 2}},
        "hits": 3,
        "misses": 1,
        "requests": 8,
        "blocks": 4,
        "fallbacks": 1,
    }
    point = make_point(before, after, [0.001, 0.002, 0.003])
    assert point["events_per_s"] == {"cart": 10.0} and point["lag"] == {"cart": 3}
    assert point["cache_hit_rate"] == 0.75 and point["fallback_rate"] == 0.25
    assert point["requests_per_s"] == 4.0 and point["triggers"] == 2
    assert point["latency_ms"]["p50"] == pytest.approx(2.0)


async def test_a_states_own_metric_lines_are_exported(client: TestClient) -> None:
    state = client.server.app[TELEMETRY].content.state
    state.metrics = lambda: [  # type: ignore[attr-defined]
        "# HELP persona_reader_catch_ups_total Catch-ups.",
        "# TYPE persona_reader_catch_ups_total counter",
        "persona_reader_catch_ups_total 3",
    ]
    text = await (await client.get("/metrics")).text()
    assert "persona_reader_catch_ups_total 3.0" in text
    assert "persona_events_processed_total" in text


async def test_a_stalled_event_loop_shows_in_the_lag_histogram(client: TestClient) -> None:
    import asyncio
    import time

    await asyncio.sleep(0.12)  # a few probes on an idle loop
    time.sleep(0.3)  # block the loop, as a long synchronous step would
    await asyncio.sleep(0.12)  # the probe that was due fires late, and records it
    found = families(await (await client.get("/metrics")).text())
    samples = {
        (s.name, s.labels.get("le")): s.value for s in found["persona_event_loop_lag_seconds"]
    }
    count = samples[("persona_event_loop_lag_seconds_count", None)]
    under_quarter_second = samples[("persona_event_loop_lag_seconds_bucket", "0.25")]
    assert count >= 2
    assert count - under_quarter_second >= 1  # the stall: one probe over 0.25 s late


async def test_the_content_caches_export_their_entries_bytes_and_bounds(
    client: TestClient,
) -> None:
    """Each content cache's accounted bytes beside its bound, as the cache counts them."""
    await client.get("/v1/users/u1/blocks/recommendations", headers=AUTH)
    await client.get("/v1/users/u1/blocks/recommendations?n=3", headers=AUTH)
    app = client.app
    assert app is not None
    content = app[CONTENT]
    found = families(await (await client.get("/metrics")).text())
    by_cache = {
        name: {s.labels["cache"]: s.value for s in found[name]}
        for name in ("persona_cache_entries", "persona_cache_bytes", "persona_cache_max_bytes")
    }
    caches = {
        "blocks": content.cache,
        "param_blocks": content.param_cache,
        "scores": content.scores_memo,
    }
    for name, cache in caches.items():
        assert by_cache["persona_cache_entries"][name] == len(cache) > 0
        assert by_cache["persona_cache_bytes"][name] == cache.bytes > 0
        assert by_cache["persona_cache_max_bytes"][name] == cache.max_bytes
