"""Catalog changes of one batch share one pass over a partition's users (streams/triggers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

from engine.catalog import Product
from engine.clock import ManualClock
from engine.events import validate
from engine.profile import Profile, apply
from engine.triggers import Trigger
from streams.triggers import TriggerRunner

T0 = 1_300_000_000_000


def _profile(user: str, events: list[tuple[str, str]]) -> Profile:
    profile: Profile | None = None
    for n, (kind, item) in enumerate(events):
        profile = apply(
            profile,
            validate(
                {
                    "event_id": f"{user}-{n}",
                    "type": kind,
                    "user_id": user,
                    "item_id": item,
                    "ts": T0 + n,
                }
            ),
        )
    assert profile is not None
    return profile


def _command(item: str, price: float, old_price: float, kinds: list[str]) -> dict[str, Any]:
    product = Product(
        item, item, f"https://s.example/{item}", f"https://s.example/{item}.jpg", price, "EUR"
    )
    return {"command": "item_changed", "product": product.to_dict(), "kinds": kinds,
            "old_price": old_price}  # fmt: skip


def test_one_pass_for_all_changes_of_a_batch() -> None:
    profiles = [
        _profile("carter", [("add_to_cart", "A")]),
        _profile("viewer", [("product_view", "B"), ("product_view", "Z")]),
        _profile("other", [("product_view", "Q")]),
    ]
    streams = SimpleNamespace(
        settings=SimpleNamespace(abandoned_cart_minutes=30, consent_granted_by_default=True),
        clock=ManualClock(T0 + 10),
    )
    runner = TriggerRunner(cast(Any, streams))
    scans: list[int] = []
    emitted: list[Trigger] = []

    def local_profiles(partition: int) -> Iterator[Profile]:
        scans.append(partition)
        yield from profiles

    async def emit(trigger: Trigger) -> None:
        emitted.append(trigger)

    runner._local_profiles = local_profiles  # type: ignore[method-assign]
    runner.emit = emit  # type: ignore[method-assign]
    commands = [
        _command("A", 8.0, 10.0, ["price_drop"]),
        _command("B", 5.0, 5.0, ["back_in_stock"]),
        {"command": "item_changed", "product": {"nonsense": 1}},  # skipped, logged
        _command("N", 1.0, 2.0, ["price_drop"]),  # nobody has it
    ]
    asyncio.run(runner.items_changed(3, commands))
    assert scans == [3]  # one pass for four changes
    got = sorted((t.trigger, t.user_id, t.details["where"]) for t in emitted)
    assert got == [("back_in_stock", "viewer", "recent_views"), ("price_drop", "carter", "cart")]
