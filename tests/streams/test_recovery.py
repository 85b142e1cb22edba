"""Tables survive a worker restart on the embedded broker: from the local RocksDB state plus the
changelog, and from the changelog alone on an empty data dir."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine.events import validate
from streams.broker import EmbeddedBroker
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import Worker, http, start_worker, wait_until

pytestmark = pytest.mark.integration

USERS = [f"r{i}" for i in range(12)]
T0 = 1_600_000_000_000


def send(broker_url: str, start: int, count: int) -> None:
    events = [
        validate(
            {
                "event_id": f"rec-{i}",
                "type": "add_to_cart",
                "user_id": USERS[i % len(USERS)],
                "ts": T0 + i,
                "item_id": f"item{i % 5}",
            }
        )
        for i in range(start, start + count)
    ]

    async def go() -> None:
        await ensure_topics(broker_url, 4, ALL_INPUTS)
        async with Producer(broker_url) as producer:
            await producer.send_events(events)

    asyncio.run(go())


def expected(total: int) -> dict[str, dict[str, int]]:
    carts: dict[str, dict[str, int]] = {u: {} for u in USERS}
    for i in range(total):
        cart = carts[USERS[i % len(USERS)]]
        cart[f"item{i % 5}"] = cart.get(f"item{i % 5}", 0) + 1
    return carts


def carts(worker: Worker) -> dict[str, dict[str, int]]:
    out = {}
    for user in USERS:
        status, _, body = http("GET", f"{worker.base}/v1/users/{user}/profile")
        out[user] = json.loads(body)["cart"] if status == 200 else None
    return out


def test_state_recovers_after_restart_and_on_an_empty_data_dir(tmp_path: Path) -> None:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        first = start_worker(broker.url, tmp_path / "a")
        try:
            send(broker.url, 0, 600)
            wait_until(lambda: carts(first) == expected(600), timeout=60, what="600 events")
        finally:
            first.stop()

        again = start_worker(broker.url, tmp_path / "a")  # same RocksDB dir
        try:
            assert carts(again) == expected(600)
            send(broker.url, 0, 900)  # 600 repeats (ignored) and 300 new events
            wait_until(lambda: carts(again) == expected(900), timeout=60, what="900 events")
        finally:
            again.stop()

        fresh = start_worker(broker.url, tmp_path / "b")  # only the changelog to go on
        try:
            assert carts(fresh) == expected(900)
        finally:
            fresh.stop()
