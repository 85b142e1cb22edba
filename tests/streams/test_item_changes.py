"""Catalog changes of one batch share one pass over a partition's users (streams/triggers.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

from engine.catalog import Product
from engine.clock import ManualClock
from engine.events import validate
from engine.profile import Profile, apply
from streams.keys import user_key
from streams.triggers import TriggerPorts, TriggerRunner

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
    scans: list[int] = []
    sent: list[tuple[bytes, dict[str, Any]]] = []

    def local_rows(partition: int) -> Iterator[tuple[bytes, bytes]]:
        scans.append(partition)
        yield b"__faust\x00offset__", b"42"  # bookkeeping rows are not profiles
        yield from ((user_key(p.user_id), p.pack()) for p in profiles)

    async def send(records: list[tuple[bytes, bytes]]) -> None:
        sent.extend((key, json.loads(message)) for key, message in records)

    never: Any = None  # ports this test does not reach
    settings = SimpleNamespace(abandoned_cart_minutes=30, consent_granted_by_default=True)
    ports = TriggerPorts(
        clock=ManualClock(T0 + 10),
        settings=cast(Any, settings),
        local_partitions=never,
        local_rows=local_rows,
        send=send,
        send_command=never,
        scorer=never,
        webhooks=lambda: None,
        ready=never,
    )
    runner = TriggerRunner(ports)
    commands = [
        _command("A", 8.0, 10.0, ["price_drop"]),
        _command("B", 5.0, 5.0, ["back_in_stock"]),
        {"command": "item_changed", "product": {"nonsense": 1}},  # skipped, logged
        _command("N", 1.0, 2.0, ["price_drop"]),  # nobody has it
    ]
    asyncio.run(runner.items_changed(3, commands))
    assert scans == [3]  # one pass for four changes
    got = sorted((key, m["trigger"], m["user_id"], m["where"]) for key, m in sent)
    assert got == [
        (b"carter", "price_drop", "carter", "cart"),
        (b"viewer", "back_in_stock", "viewer", "recent_views"),
    ]
    assert ports.counts == {"price_drop": 1, "back_in_stock": 1}
