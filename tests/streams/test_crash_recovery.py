"""Crash recovery on the real broker: a known stream is sent while the worker is SIGKILLed part-way
several times and restarted; afterwards every user's event counts and cart are exact — no event
lost, none counted twice (at-least-once redelivery is absorbed by the per-user event-id memory)."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path

import pytest

from engine.events import validate
from streams.broker import EmbeddedBroker
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import Worker, http, start_worker, wait_until

pytestmark = pytest.mark.integration

USERS = [f"crash-{i}" for i in range(30)]
ITEMS = ["85123A", "71053", "84406B", "22752", "21730"]
TOTAL = 6000
T0 = 1_291_190_000_000


def stream() -> list[dict]:
    events = []
    for i in range(TOTAL):
        user = USERS[i % len(USERS)]
        kind = ("add_to_cart", "add_to_cart", "remove_from_cart", "product_view")[(i // 30) % 4]
        events.append(
            {
                "event_id": f"crash-{i}",
                "type": kind,
                "user_id": user,
                "ts": T0 + i,
                "item_id": ITEMS[(i // 7) % len(ITEMS)],
            }
        )
    return events


def expected(events: list[dict]) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
    """Counts and carts computed independently of the engine, by plain arithmetic."""
    out: dict[str, tuple[dict[str, int], dict[str, int]]] = {u: ({}, {}) for u in USERS}
    for e in events:
        counts, cart = out[e["user_id"]]
        counts[e["type"]] = counts.get(e["type"], 0) + 1
        item = e["item_id"]
        if e["type"] == "add_to_cart":
            cart[item] = cart.get(item, 0) + 1
        elif e["type"] == "remove_from_cart":
            left = cart.get(item, 0) - 1
            if left > 0:
                cart[item] = left
            else:
                cart.pop(item, None)
    return out


def observed(worker: Worker) -> dict[str, tuple[dict[str, int], dict[str, int]] | None]:
    out: dict[str, tuple[dict[str, int], dict[str, int]] | None] = {}
    for user in USERS:
        status, _, body = http("GET", f"{worker.base}/v1/users/{user}/profile")
        profile = json.loads(body) if status == 200 else None
        out[user] = (profile["events"], profile["cart"]) if profile else None
    return out


def test_sigkill_part_way_loses_and_double_counts_nothing(tmp_path: Path) -> None:
    events = stream()
    want = expected(events)
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        worker = start_worker(broker.url, tmp_path / "w")
        sent = threading.Event()

        def produce() -> None:
            async def go() -> None:
                await ensure_topics(broker.url, 4, ALL_INPUTS)
                async with Producer(broker.url) as producer:
                    await producer.send_events((validate(e) for e in events), rate=100)

            asyncio.run(go())
            sent.set()

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        kills = 0
        try:
            for _ in range(3):
                time.sleep(2.5)
                assert not sent.is_set(), "the stream ended before the kill: slow it down"
                worker.proc.send_signal(signal.SIGKILL)
                worker.proc.wait(10)
                kills += 1
                worker = start_worker(broker.url, tmp_path / "w")
            thread.join(120)
            assert sent.is_set()
            last: dict[str, object] = {}

            def exact() -> bool:
                seen = observed(worker)
                last.clear()
                last.update({u: (seen[u], want[u]) for u in USERS if seen[u] != want[u]})
                return not last

            try:
                wait_until(exact, timeout=120, interval=1.0, what="exact counts and carts")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; users off (seen, wanted): {last}") from None
        finally:
            worker.stop()
        assert kills == 3
