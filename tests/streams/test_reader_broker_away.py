"""A reader whose broker is away when it first produces: the request's error is BrokerUnavailable
(the API answers 503), and the producer that could not start is closed, not left for the garbage
collector to report (`Unclosed AIOKafkaProducer` in a reader's log at each refused request)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path

import pytest

from engine.errors import BrokerUnavailable
from engine.events import validate
from streams.broker import free_port
from streams.readers import SecondaryState


def test_a_producer_that_cannot_start_is_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = SecondaryState(
        tmp_path / "data", 2, tmp_path / "secondary", f"kafka://127.0.0.1:{free_port()}"
    )
    now = int(time.time() * 1000) - 1000
    event = validate({"event_id": "e-1", "type": "page_view", "user_id": "u1", "ts": now})

    async def go() -> None:
        for _ in range(2):
            with pytest.raises(BrokerUnavailable, match="Unable to bootstrap"):
                await state.produce([event])
        gc.collect()
        await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR):
        asyncio.run(go())
        gc.collect()
    unclosed = [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]
    assert unclosed == []
