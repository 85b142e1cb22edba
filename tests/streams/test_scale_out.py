"""Scale-out: two workers on one broker split the partitions, either API answers for any user
(requests are forwarded to the partition's owner), and when one worker is killed the other serves
every user again within 30 s."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from engine.events import validate
from streams.broker import EmbeddedBroker
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import Worker, http, start_worker, wait_until

pytestmark = pytest.mark.integration

USERS = [f"scale-{i}" for i in range(24)]
T0 = 1_291_190_000_000


def carts(worker: Worker) -> tuple[dict[str, dict[str, int] | None], set[str]]:
    out: dict[str, dict[str, int] | None] = {}
    routed: set[str] = set()
    for user in USERS:
        status, headers, body = http("GET", f"{worker.base}/v1/users/{user}/profile", timeout=5)
        out[user] = json.loads(body)["cart"] if status == 200 else None
        if headers.get("X-Persona-Routed"):
            routed.add(user)
    return out, routed


def test_two_workers_split_route_and_fail_over(tmp_path: Path) -> None:
    want = {u: {f"i{n % 3}": 1} for n, u in enumerate(USERS)}
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        a = start_worker(broker.url, tmp_path / "a")
        b = start_worker(broker.url, tmp_path / "b")
        try:

            def both_ready() -> bool:
                return all(http("GET", w.base + "/readyz", key=None)[0] == 200 for w in (a, b))

            wait_until(both_ready, timeout=60, what="both workers ready after the rebalance")

            async def go() -> None:
                await ensure_topics(broker.url, 4, ALL_INPUTS)
                async with Producer(broker.url) as producer:
                    await producer.send_events(
                        validate(
                            {
                                "event_id": f"s{n}",
                                "type": "add_to_cart",
                                "user_id": u,
                                "ts": T0 + n,
                                "item_id": f"i{n % 3}",
                            }
                        )
                        for n, u in enumerate(USERS)
                    )

            asyncio.run(go())

            wait_until(lambda: carts(a)[0] == want, timeout=60, what="every user via worker a")
            via_a, routed_a = carts(a)
            via_b, routed_b = carts(b)
            assert via_a == via_b == want
            assert routed_a and routed_b  # each forwarded the other's users
            assert not routed_a & routed_b

            b.proc.send_signal(signal.SIGKILL)
            b.proc.wait(10)
            killed = time.monotonic()
            wait_until(
                lambda: carts(a)[0] == want,
                timeout=30,
                interval=0.5,
                what="worker a serving every user alone",
            )
            print(f"failover: every user served {time.monotonic() - killed:.1f} s after SIGKILL")
        finally:
            a.stop()
            b.stop()
