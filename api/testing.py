"""An in-memory `StateView` shipped with the code: the API without Kafka, for tests and notebooks.

`produce` folds events straight into profiles with the same pure core the stream uses, and the clock
is a `ManualClock` the caller controls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.catalog import Product
from engine.clock import EventTimeClock, ManualClock
from engine.events import Event
from engine.profile import Profile, apply


class MemoryState:
    def __init__(self, wall: ManualClock | None = None) -> None:
        self.wall = wall or ManualClock(2_000_000_000_000)
        self.clock = EventTimeClock(self.wall)
        self.profiles: dict[str, Profile] = {}
        self.catalog: dict[str, Product] = {}
        self.popular_items: list[str] = []
        self.catalog_generation = 0
        self.is_ready = True
        self.produced: list[Event] = []

    def profile(self, user_id: str) -> Profile | None:
        return self.profiles.get(user_id)

    def product(self, item_id: str) -> Product | None:
        return self.catalog.get(item_id)

    def popular(self) -> list[str]:
        return self.popular_items

    def products(self) -> Iterator[Product]:
        """Every catalog product (the ad feeds stream these)."""
        return iter(list(self.catalog.values()))

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def ready(self) -> tuple[bool, str]:
        return (True, "ok") if self.is_ready else (False, "starting")

    def put_product(self, product: Product) -> None:
        self.catalog[product.item_id] = product
        self.catalog_generation += 1

    def apply(self, event: Event) -> None:
        product = self.catalog.get(event.item_id) if event.item_id else None
        self.profiles[event.user_id] = apply(self.profiles.get(event.user_id), event, product)
        self.clock.observe(event.ts)

    def figures(self) -> dict[str, Any]:
        """Stream figures as the worker reports them (see api.observability)."""
        return {
            "counters": {
                "events_processed": len(self.produced),
                "events_duplicate": 0,
                "events_dead_lettered": 0,
                "catalog_updates": self.catalog_generation,
            },
            "consumed": {"clickstream": len(self.produced)},
            "lag": {"clickstream": 0},
        }

    def sample_profiles(self, n: int) -> list[Profile]:
        return list(self.profiles.values())[:n]

    def owner_url(self, user_id: str) -> str | None:
        return None

    async def erase(self, user_id: str) -> None:
        self.profiles.pop(user_id, None)

    async def produce(self, events: list[Event]) -> None:
        for event in events:
            self.produced.append(event)
            self.apply(event)
