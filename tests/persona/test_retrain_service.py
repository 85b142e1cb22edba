"""The worker's side of scheduled retraining (persona/retrain.py), with real child processes in
place of the training job: the event loop keeps running while a run goes on, a failing or
overlong run is counted as failed (the overlong child killed), and a result is promoted only
when `decide` allows it, audited. The real job on a real broker: tests/persona/test_retrain.py."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from types import SimpleNamespace
from typing import Any

import pytest

import persona.retrain as retrain
from engine.settings import Settings
from models.registry_log import Manifest, RegistryLog
from models.retrain import RETRAIN
from persona.retrain import RetrainService

NEW = "recs-20261203T1200-00000001"


class Scripted(RetrainService):
    """Runs `script` (Python source) as the child instead of `persona.retrain_job`."""

    script = ""

    def _command(self) -> list[str]:
        return [sys.executable, "-c", self.script]


def service(script: str, promote: bool = True) -> tuple[Scripted, list[tuple[str, str]]]:
    state = RegistryLog()
    state.versions[NEW] = Manifest("recs", "item_knn", NEW, "2026-12-03T12:00:00Z", {})
    activated: list[tuple[str, str]] = []

    async def activate(name: str, version: str) -> dict[str, Any]:
        activated.append((name, version))
        return {}

    registry = SimpleNamespace(registry=state, listing=state.listing, activate=activate)
    settings = Settings(
        broker_url="kafka://127.0.0.1:1", retrain_hours=1.0, retrain_promote=promote
    )
    runner = Scripted(settings, registry)  # type: ignore[arg-type]
    runner.script = script
    return runner, activated


def result(new: float, old: float, users: int = 60) -> str:
    mark = {"new": {"hr@10": new}, "active": {"version": "v0", "hr@10": old}, "test_users": users}
    row = {"name": "recs", "version": NEW, RETRAIN: mark}
    skipped = {"name": "churn", "skipped": "needs over 180 days of events, has 1.0"}
    return f"print({json.dumps(json.dumps({'events': 900, 'models': [row, skipped]}))})"


async def test_the_event_loop_runs_on_while_a_run_goes_on() -> None:
    runner, _ = service("import time; time.sleep(2); " + result(0.2, 0.3))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    try:
        assert await runner.run_once() == "published"
    finally:
        ticker.cancel()
    assert ticks > 0  # the child slept 2 s: a loop blocked on it would not have ticked at all


async def test_a_better_version_is_promoted_and_audited(caplog: pytest.LogCaptureFixture) -> None:
    runner, activated = service(result(0.4, 0.3))
    with caplog.at_level(logging.INFO, logger="persona.audit"):
        assert await runner.run_once() == "promoted"
    assert activated == [("recs", NEW)]
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "persona.audit"]
    assert [(a["action"], a["version"], a["replaced"]) for a in audit] == [
        ("model_promoted", NEW, runner.registry.registry.active("recs"))
    ]
    assert audit[0]["new"] == {"hr@10": 0.4} and audit[0]["active"]["hr@10"] == 0.3
    assert runner.runs["promoted"] == 1 and runner.last_success is not None


@pytest.mark.parametrize(
    ("new", "old", "promote"), [(0.4, 0.3, False), (0.3, 0.3, True), (0.2, 0.3, True)]
)
async def test_without_promotion_or_a_better_metric_it_stays_registered(
    new: float, old: float, promote: bool
) -> None:
    runner, activated = service(result(new, old), promote=promote)
    assert await runner.run_once() == "published"
    assert activated == []


async def test_a_failed_run_is_counted_and_the_next_one_still_runs() -> None:
    runner, _ = service('print(\'{"error": "boom"}\'); raise SystemExit(1)')
    assert await runner.run_once() == "failed"
    runner.script = "print('not json')"
    assert await runner.run_once() == "failed"
    runner.script = result(0.2, 0.3)
    assert await runner.run_once() == "published"
    lines = runner.metric_lines()
    assert 'persona_retrain_runs_total{outcome="failed"} 2' in lines
    assert 'persona_retrain_runs_total{outcome="published"} 1' in lines


async def test_an_overlong_run_is_killed_and_counted_as_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retrain, "MAX_RUN_S", 1.0)
    runner, _ = service("import time; time.sleep(120)")
    assert await runner.run_once() == "failed"
    assert runner.last_success is None
    assert "persona_retrain_last_success_timestamp_seconds 0" in runner.metric_lines()
