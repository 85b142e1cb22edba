"""Scale-out: two workers on one broker split the partitions, either API answers for any user
(requests are forwarded to the partition's owner), and when one worker is killed the other serves
every user again within 30 s."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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


FAILOVER_USERS = [f"fail-{i}" for i in range(40)]
FAILOVER_TOTAL = 6000
FAILOVER_TYPES = ("product_view", "product_view", "add_to_cart", "purchase")


def failover_stream() -> tuple[list[dict], dict[str, dict[str, int]]]:
    """The events, and each user's counts per type by plain arithmetic."""
    events: list[dict] = []
    want: dict[str, dict[str, int]] = {u: {} for u in FAILOVER_USERS}
    for n in range(FAILOVER_TOTAL):
        user = FAILOVER_USERS[(n * 7 + n // 40) % len(FAILOVER_USERS)]
        kind = FAILOVER_TYPES[(n // 3) % len(FAILOVER_TYPES)]
        event: dict = {"event_id": f"f{n}", "type": kind, "user_id": user, "ts": T0 + n}
        event["item_id"] = f"i{n % 9}"
        if kind == "purchase":
            event.update(quantity=1, price=5.0, currency="EUR")
        events.append(event)
        want[user][kind] = want[user].get(kind, 0) + 1
    return events, want


def counts(worker: Worker) -> dict[str, dict[str, int] | None]:
    out: dict[str, dict[str, int] | None] = {}
    for user in FAILOVER_USERS:
        status, _, body = http("GET", f"{worker.base}/v1/users/{user}/profile", timeout=5)
        out[user] = json.loads(body)["events"] if status == 200 else None
    return out


def test_kill_9_of_one_worker_mid_stream_loses_and_double_counts_nothing(tmp_path: Path) -> None:
    """A worker SIGKILLed while the stream flows: the other takes its partitions over from the
    committed offsets and its standby copy, and folds each event exactly once (the per-user
    event-id memory absorbs what the dead worker folded past its last commit). The killed worker
    then comes back on its stale data dir, takes its share back, and both answer the same exact
    counts for every user."""
    events, want = failover_stream()
    fast = {"PERSONA_BROKER_SESSION_TIMEOUT": "3"}  # the group notices the death in ~3 s
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        asyncio.run(ensure_topics(broker.url, 4, ALL_INPUTS))
        with ThreadPoolExecutor(2) as pool:
            started = [
                pool.submit(start_worker, broker.url, tmp_path / name, fast) for name in "ab"
            ]
            a, b = (f.result() for f in started)
        try:
            wait_until(
                lambda: all(http("GET", w.base + "/readyz", key=None)[0] == 200 for w in (a, b)),
                timeout=60,
                what="both workers ready after the rebalance",
            )
            sent = threading.Event()

            def produce() -> None:
                async def go() -> None:
                    async with Producer(broker.url) as producer:
                        await producer.send_events((validate(e) for e in events), rate=1500)

                asyncio.run(go())
                sent.set()

            thread = threading.Thread(target=produce, daemon=True)
            thread.start()
            time.sleep(2)
            folded = sum(sum((c or {}).values()) for c in counts(a).values())
            assert folded and not sent.is_set(), "the kill must land while the stream is folded"
            b.proc.send_signal(signal.SIGKILL)
            b.proc.wait(10)
            thread.join(60)
            assert sent.is_set()
            last: dict[str, object] = {}

            def exact(*workers: Worker) -> bool:
                last.clear()
                for w in workers:
                    seen = counts(w)
                    last.update({u: (w.base, seen[u], want[u]) for u in want if seen[u] != want[u]})
                return not last

            try:
                wait_until(lambda: exact(a), timeout=30, interval=1, what="a alone: exact counts")
                b = start_worker(broker.url, tmp_path / "b", fast)
                wait_until(lambda: exact(a, b), timeout=30, interval=1, what="a and b: exact")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; users off (worker, seen, wanted): {last}") from None
        finally:
            a.stop()
            b.stop()
