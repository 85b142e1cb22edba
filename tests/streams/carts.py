"""A known stream of add_to_cart events, and the carts it must produce (computed by plain
arithmetic, not by the engine): shared by the recovery tests that restart workers."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from engine.events import validate
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import Worker, http

T0 = 1_600_000_000_000


@dataclass(frozen=True)
class CartStream:
    """Event i: `<prefix>-<i>`, user `users[i % len(users)]`, item `item<i % items>`."""

    prefix: str
    users: tuple[str, ...]
    items: int
    partitions: int = 4

    def send(self, broker_url: str, start: int, count: int) -> None:
        events = [
            validate(
                {
                    "event_id": f"{self.prefix}-{i}",
                    "type": "add_to_cart",
                    "user_id": self.users[i % len(self.users)],
                    "ts": T0 + i,
                    "item_id": f"item{i % self.items}",
                }
            )
            for i in range(start, start + count)
        ]

        async def go() -> None:
            await ensure_topics(broker_url, self.partitions, ALL_INPUTS)
            async with Producer(broker_url) as producer:
                await producer.send_events(events)

        asyncio.run(go())

    def expected(self, total: int) -> dict[str, dict[str, int] | None]:
        """Every user's cart after events 0 .. total - 1."""
        carts: dict[str, dict[str, int] | None] = {u: {} for u in self.users}
        for i in range(total):
            cart = carts[self.users[i % len(self.users)]]
            assert cart is not None
            item = f"item{i % self.items}"
            cart[item] = cart.get(item, 0) + 1
        return carts

    def carts(self, worker: Worker) -> dict[str, dict[str, int] | None]:
        """Every user's cart as the worker answers it (None: no profile)."""
        out: dict[str, dict[str, int] | None] = {}
        for user in self.users:
            status, _, body = http("GET", f"{worker.base}/v1/users/{user}/profile")
            out[user] = json.loads(body)["cart"] if status == 200 else None
        return out
