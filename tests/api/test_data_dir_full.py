"""A full data dir (under persona.state_dir.MIN_FREE free): POST /v1/events and POST /v1/collect
answer 503 with Retry-After and a problem body instead of piling events up in the broker's memory,
202 again once there is room; `persona_data_dir_free_bytes` on /metrics (api/event_routes.py
`watch_data_dir`, engine/room.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.event_routes import FULL_RETRY_AFTER, watch_data_dir
from api.limits import ServingOptions
from api.observability import TELEMETRY
from api.openapi import openapi_document
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.clock import ManualClock
from engine.room import READ_EVERY_MS
from models.registry import ModelSet
from persona.state_dir import MIN_FREE

WRITE = "events-write-kkkkkkkkkkkkk"
PK = "pk-publishable-kkkkkkkkkkk"
KEYS = f"write:{WRITE}:events:write;pk:{PK}:events:collect"
DATA_DIR = Path("/srv/persona-data-secret-path")
ROUTES = [("/v1/events", WRITE), ("/v1/collect", PK)]


class FakeDisk:
    def __init__(self, free: int) -> None:
        self.free = free
        self.reads = 0

    def __call__(self, path: Path) -> int:
        assert path == DATA_DIR
        self.reads += 1
        return self.free


def _app(state: MemoryState) -> Any:
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    options = ServingOptions(collect_per_minute=100_000)
    return create_app(content, KeyRing.from_settings(KEYS, None), options)


def _events(n: int = 1) -> list[dict[str, Any]]:
    now = int(time.time() * 1000) - 1000
    return [
        {"event_id": f"e-{time.monotonic_ns()}-{i}", "type": "product_view", "user_id": "u1",
         "item_id": "A", "ts": now}
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


@pytest.fixture
def disk() -> FakeDisk:
    return FakeDisk(MIN_FREE - 1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000_000)


@pytest.fixture
async def client(
    state: MemoryState, disk: FakeDisk, clock: ManualClock
) -> AsyncIterator[TestClient]:
    app = _app(state)
    watch_data_dir(app, DATA_DIR, disk, MIN_FREE, clock)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.parametrize(("path", "key"), ROUTES)
async def test_a_full_data_dir_is_503_then_202_once_there_is_room(
    client: TestClient,
    state: MemoryState,
    disk: FakeDisk,
    clock: ManualClock,
    path: str,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with caplog.at_level(logging.WARNING, logger="persona"):
        r = await client.post(path, json=_events(), headers=headers)
        assert r.status == 503
        assert r.headers["Retry-After"] == str(FULL_RETRY_AFTER) == "30"
        assert r.content_type == "application/problem+json"
        body = await r.json()
        assert body["status"] == 503 and "full" in body["title"].lower()
        assert str(DATA_DIR) not in await r.text()  # the path is for the logs
        assert state.produced == []
        warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
        assert len(warned) == 1 and str(DATA_DIR) in warned[0]
        disk.free = MIN_FREE
        r = await client.post(path, json=_events(), headers=headers)
        assert r.status == 503  # the reading of this second still holds
        clock.advance(READ_EVERY_MS)
        r = await client.post(path, json=_events(), headers=headers)
        assert r.status == 202, await r.text()
        assert len(state.produced) == 1


async def test_the_reading_is_taken_once_a_second_for_many_requests(
    client: TestClient, disk: FakeDisk, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Authorization": f"Bearer {WRITE}"}
    with caplog.at_level(logging.WARNING, logger="persona"):
        for path, key in ROUTES * 10:
            r = await client.post(path, json=_events(), headers={"Authorization": f"Bearer {key}"})
            assert r.status == 503
        assert disk.reads == 1
        clock.advance(READ_EVERY_MS)
        assert (await client.post("/v1/events", json=_events(), headers=headers)).status == 503
        assert disk.reads == 2
    warned = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warned) == 1  # once a minute at most


async def test_the_free_space_is_on_metrics(client: TestClient, disk: FakeDisk) -> None:
    disk.free = 123_456_789
    text = generate_latest(client.app[TELEMETRY].registry).decode()
    assert "persona_data_dir_free_bytes 1.23456789e+08" in text
    disk.free = 5
    r = await client.get("/metrics")
    assert "persona_data_dir_free_bytes 5.0" in await r.text()


async def test_without_a_data_dir_nothing_changes(state: MemoryState) -> None:
    async with TestClient(TestServer(_app(state))) as c:
        r = await c.post("/v1/events", json=_events(), headers={"Authorization": f"Bearer {WRITE}"})
        assert r.status == 202
        assert "persona_data_dir_free_bytes" not in await (await c.get("/metrics")).text()


def test_the_503_is_in_the_api_document() -> None:
    paths = openapi_document()["paths"]
    for path, _ in ROUTES:
        assert "Retry-After" in paths[path]["post"]["responses"]["503"]["headers"]
