"""A broker that cannot take records: POST /v1/events answers 503 with Retry-After and a problem
saying nothing was accepted (it was a 500 "see the server log" from a reader whose broker was
down), so the sender sends again. The produce path turns the Kafka client's errors into
BrokerUnavailable (streams/read_side.py); the errors middleware answers it on every route."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.events import Event
from models.registry import ModelSet
from streams import read_side
from streams.broker import free_port

WRITE = "events-write-kkkkkkkkkkkkk"


class BrokerAway(MemoryState):
    """Produces as a reader does (streams/readers.py `_send`): a real Kafka producer, started on
    first use, here against a port nobody listens on."""

    async def produce(self, events: list[Event]) -> None:
        async def send(topic: str, key: bytes, value: bytes, headers: Any) -> Any:
            producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{free_port()}")
            try:
                await producer.start()
            finally:
                await producer.stop()

        await read_side.produce(send, events, None)


async def test_events_answer_503_when_the_broker_is_away(caplog: pytest.LogCaptureFixture) -> None:
    content = ContentService(BrokerAway(), ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(
        content, KeyRing.from_settings(f"w:{WRITE}:events:write", None), ServingOptions()
    )
    now = int(time.time() * 1000) - 1000
    event = {"event_id": "e-1", "type": "page_view", "user_id": "u1", "ts": now}
    with caplog.at_level(logging.WARNING, logger="persona"):
        async with TestClient(TestServer(app)) as client:
            r = await client.post(
                "/v1/events", json=[event], headers={"Authorization": f"Bearer {WRITE}"}
            )
            body = json.loads(await r.text())
    assert r.status == 503, body
    assert int(r.headers["Retry-After"]) > 0
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert body["title"] == "Broker unavailable" and "send the request again" in body["detail"]
    logged = [rec.getMessage() for rec in caplog.records]
    assert not [m for m in logged if "unhandled error" in m], logged
    assert [m for m in logged if "broker" in m and "POST /v1/events" in m], logged
