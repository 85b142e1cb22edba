"""Why a DELETE /v1/users/{id} answered 202 `erased: false`: the worker's state (before its
first assignment: ownership unknown) and a reader's (its worker's view "unknown", a rebalance; or
naming another worker, which routing could not reach) behind the real API app, erasing through a
broker of their own. The 202 said only `existed: null`, not why (a caller could not tell a
rebalance, worth a retry in seconds, from an owner that is down)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from engine import ownership
from engine.blocks import BlockPolicy, Renderer
from engine.settings import Settings
from engine.signing import cluster_key
from engine.state_view import StateView
from models.registry import ModelSet
from persona.worker import StreamState
from streams.admin import prepare_broker
from streams.app import PersonaStreams
from streams.broker import EmbeddedBroker
from streams.readers import SecondaryState
from streams.signed import RecordSigner

pytestmark = pytest.mark.integration

PARTITIONS = 4
SECRET = "erase-reason-cluster-secret-of-the-test"
KEY = "erase-reason-key-" + "k" * 20
KEYS = f"admin:{KEY}:privacy:admin"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_file=tmp_path_factory.mktemp("reason") / "broker.log") as broker:
        asyncio.run(prepare_broker(broker.url, PARTITIONS))
        yield broker


@asynccontextmanager
async def _worker_state(broker_url: str, data_dir: Path) -> AsyncIterator[StateView]:
    """A worker's state before its first assignment (its Faust app not started: no group)."""
    settings = Settings(data_dir=data_dir, partitions=PARTITIONS, cluster_secret=SECRET)
    streams = PersonaStreams(settings, broker_url)
    await streams.app.producer.start()
    try:
        yield StreamState(streams, ModelSet.default())
    finally:
        await streams.app.producer.stop()


@asynccontextmanager
async def _reader_state(
    broker_url: str, data_dir: Path, owners: list[str | None]
) -> AsyncIterator[StateView]:
    """A reader whose worker's published view names `owners` (the worker itself: `OWN`)."""
    ownership.write(data_dir / ownership.FILE_NAME, OWN, owners)
    key = cluster_key(SECRET)
    assert key is not None
    reader = SecondaryState(
        data_dir, PARTITIONS, data_dir / "s", broker_url, signer=RecordSigner(key, "reader:t")
    )
    reader.check_ownership()
    try:
        yield reader
    finally:
        await reader.stop()


OWN = "http://127.0.0.1:8081"


async def _delete(state: StateView, user: str) -> tuple[int, dict[str, object]]:
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None), ServingOptions())
    async with TestClient(TestServer(app)) as client:
        r = await client.delete(f"/v1/users/{user}", headers={"Authorization": f"Bearer {KEY}"})
        return r.status, await r.json()


def test_a_worker_before_its_first_assignment_says_ownership_is_unknown(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    async def go() -> tuple[int, dict[str, object]]:
        async with _worker_state(own_broker.url, tmp_path) as state:
            assert not state.owner_known("w-user")
            return await _delete(state, "w-user")

    status, body = asyncio.run(go())
    assert status == 202 and body["erased"] is False and body["existed"] is None, body
    assert body["reason"] == "ownership_unknown", body


def test_a_reader_during_a_rebalance_says_ownership_is_unknown(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    async def go() -> tuple[int, dict[str, object]]:
        async with _reader_state(own_broker.url, tmp_path, [None] * PARTITIONS) as state:
            return await _delete(state, "r-user")

    status, body = asyncio.run(go())
    assert status == 202 and body["erased"] is False and body["existed"] is None, body
    assert body["reason"] == "ownership_unknown", body


def test_a_reader_whose_owner_cannot_be_reached_says_so(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    async def go() -> tuple[int, dict[str, object]]:
        async with _reader_state(own_broker.url, tmp_path, [UNREACHABLE] * PARTITIONS) as state:
            assert state.owner_url("r-user") == UNREACHABLE
            return await _delete(state, "r-user")

    status, body = asyncio.run(go())
    assert status == 202 and body["erased"] is False and body["existed"] is None, body
    assert body["reason"] == "owner_unreachable", body
