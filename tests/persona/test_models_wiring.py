"""What a process's registry fold counts reaches its /metrics (persona/models_wiring.py,
`count_refusals`): the records refused at the gate and the incomplete artifact files dropped to
keep within MAX_PENDING (models/registry_log.py)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.content import ContentService
from api.observability import TELEMETRY, Telemetry
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from models.registry import ModelSet
from models.registry_log import MAX_PENDING
from persona.models_wiring import count_refusals
from streams.registry import RegistryService

DROPPED = "persona_registry_chunks_dropped"


def _scrape(app: web.Application) -> dict[str, float]:
    text = generate_latest(app[TELEMETRY].registry).decode()
    return {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        if f.name.startswith("persona_registry_")
        for s in f.samples
        if not s.labels
    }


def test_dropped_incomplete_artifacts_are_counted_on_metrics(tmp_path: Path) -> None:
    app = web.Application()
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())
    app[TELEMETRY] = Telemetry(content)
    registry = RegistryService("kafka://127.0.0.1:9", tmp_path / "models", lambda models: None)
    count_refusals(app, registry)
    assert _scrape(app)[DROPPED + "_total"] == 0
    for i in range(MAX_PENDING + 2):  # the last chunk of 2 of each: every file stays incomplete
        registry.registry.apply(f"chunk/recs-20261207T0000-{i:08x}/recs.npz/1/2", b"x")
    assert registry.registry.dropped == 2
    assert _scrape(app)[DROPPED + "_total"] == 2
