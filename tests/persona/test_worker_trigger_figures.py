"""What a worker counts of its triggers reaches /metrics: those emitted and those recorded but
not sent because what they are about is older than PERSONA_TRIGGER_MAX_AGE_HOURS
(`persona_triggers_stale_total{trigger}`, streams/triggers.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.observability import Telemetry
from engine.blocks import BlockPolicy, Renderer
from engine.events import validate
from engine.profile import Profile, apply
from engine.settings import Settings
from engine.triggers import ABANDONED_CART
from models.registry import ModelSet
from persona.worker import StreamState
from streams.app import PersonaStreams

DAY = 86_400_000
KEY = "ops-key-0123456789abcdef"
YEAR_AGO = int(time.time() * 1000) - 365 * DAY


def _cart(user: str, ts: int) -> Profile:
    view = {"event_id": f"{user}-1", "type": "product_view", "user_id": user, "ts": ts}
    cart = {**view, "event_id": f"{user}-2", "type": "add_to_cart"}
    profile = apply(None, validate({**view, "item_id": "lamp"}))
    return apply(profile, validate({**cart, "item_id": "lamp"}))


def _scrape(state: StreamState) -> dict[str, dict[str, float]]:
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    text = generate_latest(Telemetry(content).registry).decode()
    return {
        f.name: {
            s.labels.get("trigger", ""): s.value for s in f.samples if s.name.endswith("_total")
        }
        for f in text_string_to_metric_families(text)
        if f.name.startswith("persona_triggers_")
    }


def test_a_stale_trigger_is_counted_on_the_workers_metrics(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, trigger_max_age_hours=72)
    streams = PersonaStreams(settings, "kafka://127.0.0.1:9")
    state = StreamState(streams, ModelSet.default())
    touched: Any = {}
    for user in ("ann", "bob"):  # year-old carts: due in event time, too old to send
        touched[user.encode()] = (_cart(user, YEAR_AGO), None, False)
    assert streams.triggers.evaluate(touched) == []
    metrics = _scrape(state)
    assert metrics["persona_triggers_stale"] == {ABANDONED_CART: 2.0}
    assert metrics["persona_triggers_emitted"] == {}


async def test_the_stale_count_is_on_the_dashboards_stats_beside_the_emitted(
    tmp_path: Path,
) -> None:
    """`/v1/stats` showed the triggers emitted by name, not those recorded but too old to send."""
    settings = Settings(data_dir=tmp_path, trigger_max_age_hours=72)
    streams = PersonaStreams(settings, "kafka://127.0.0.1:9")
    state = StreamState(streams, ModelSet.default())
    touched: Any = {b"cy": (_cart("cy", YEAR_AGO), None, False)}
    assert streams.triggers.evaluate(touched) == []
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(f"ops:{KEY}:content:read", None))
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/v1/stats", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status == 200, await r.text()
        stats = await r.json()
    assert stats["triggers"] == {} and stats["triggers_stale"] == {ABANDONED_CART: 1}
