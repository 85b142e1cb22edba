"""Lateness per (topic, partition) on the real broker: a replay whose topics a worker reads weeks
of event time apart dead-letters nothing as late, and each topic-partition's stream time survives
a restart (on its data dir, and recovered from the clock table's changelog on an empty one).

Before, the stream time was kept per partition NUMBER, shared by every input topic of that
number: with the `cart` replay read first, every `clickstream` event of the same partition numbers
was 30 to 60 days behind it and went to dead-letters as late.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine.events import Event, validate
from streams.broker import EmbeddedBroker
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import Worker, http, metric, start_worker, wait_until

pytestmark = pytest.mark.integration

USERS = tuple(f"late-{i}" for i in range(8))
T0 = 1_600_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR


def ev(event_id: str, kind: str, user: str, ts: int) -> Event:
    body = {"event_id": event_id, "type": kind, "user_id": user, "ts": ts, "item_id": "i1"}
    return validate(body)


def send(broker_url: str, events: list[Event]) -> None:
    async def go() -> None:
        await ensure_topics(broker_url, 4, ALL_INPUTS)
        async with Producer(broker_url) as producer:
            await producer.send_events(events)

    asyncio.run(go())


def counts(worker: Worker) -> dict[str, dict[str, int] | None]:
    """Every user's event counts per type as the worker answers them (None: no profile)."""
    out: dict[str, dict[str, int] | None] = {}
    for user in USERS:
        status, _, body = http("GET", f"{worker.base}/v1/users/{user}/profile")
        out[user] = json.loads(body)["events"] if status == 200 else None
    return out


def late_and_folded(worker: Worker, late: int, views: int) -> bool:
    user = counts(worker)[USERS[0]] or {}
    return metric(worker.base, "persona_events_late_total") == late and (
        user.get("product_view") == views
    )


def test_a_replay_read_topic_by_topic_is_not_late_and_stream_times_survive_restarts(
    tmp_path: Path,
) -> None:
    # the cart replay covers days 30..59 of event time, the clickstream replay days 0..29
    carts = [ev(f"c{d}-{u}", "add_to_cart", u, T0 + d * DAY) for d in range(30, 60) for u in USERS]
    views = [ev(f"v{d}-{u}", "product_view", u, T0 + d * DAY) for d in range(30) for u in USERS]
    folded = {u: {"add_to_cart": 30, "product_view": 30} for u in USERS}
    user = USERS[0]
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        worker = start_worker(broker.url, tmp_path / "w")
        try:
            send(broker.url, carts)  # the worker reads the cart replay first, whole ...
            wait_until(
                lambda: metric(worker.base, "persona_events_processed_total") >= len(carts),
                timeout=60,
                what="the cart replay folded",
            )
            send(broker.url, views)  # ... then clickstream, 30 to 60 days of event time behind
            wait_until(lambda: counts(worker) == folded, timeout=60, what="both replays folded")
            assert metric(worker.base, "persona_events_late_total") == 0
            assert metric(worker.base, "persona_events_dead_lettered_total") == 0
            processed = metric(worker.base, "persona_events_processed_total")
            assert processed == len(carts) + len(views)
        finally:
            worker.stop()

        # Stream times now: clickstream day 29, cart day 59 (every partition number).
        worker = start_worker(broker.url, tmp_path / "w")  # the same data dir
        try:
            send(
                broker.url,
                [
                    ev("late-view", "product_view", user, T0 + 21 * DAY - HOUR),  # 8 d behind
                    ev("late-cart", "add_to_cart", user, T0 + 51 * DAY - HOUR),  # 8 d behind
                    ev("view-6d", "product_view", user, T0 + 23 * DAY),  # 6 d: folded
                ],
            )
            wait_until(
                lambda: late_and_folded(worker, late=2, views=31),
                timeout=60,
                what="two late events and one more view",
            )
        finally:
            worker.stop()

        # A worker on an empty data dir recovers the stream times from the clock's changelog.
        worker = start_worker(broker.url, tmp_path / "empty")
        try:
            send(
                broker.url,
                [
                    ev("late-view-2", "product_view", user, T0 + 21 * DAY - HOUR),
                    ev("view-5d", "product_view", user, T0 + 24 * DAY),
                ],
            )
            wait_until(
                lambda: late_and_folded(worker, late=1, views=32),
                timeout=60,
                what="one late event and one more view",
            )
            assert metric(worker.base, "persona_events_dead_lettered_total") == 1
        finally:
            worker.stop()
