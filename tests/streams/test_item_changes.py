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

    ports = _ports(local_rows, send)
    runner = TriggerRunner(ports)
    commands = [
        _command("A", 8.0, 10.0, ["price_drop"]),
        _command("B", 5.0, 5.0, ["back_in_stock"]),
        {"command": "item_changed", "product": {"nonsense": 1}},  # skipped, logged
        _command("N", 1.0, 2.0, ["price_drop"]),  # nobody has it
    ]
    touched: dict[bytes, Any] = {}
    fired = asyncio.run(runner.items_changed(3, [(c, T0) for c in commands], touched, "cmd"))
    asyncio.run(runner.emit(*fired))
    assert scans == [3]  # one pass for four changes
    got = sorted((key, m["trigger"], m["user_id"], m["where"]) for key, m in sent)
    assert got == [
        (b"carter", "price_drop", "carter", "cart"),
        (b"viewer", "back_in_stock", "viewer", "recent_views"),
    ]
    assert ports.counts == {"price_drop": 1, "back_in_stock": 1}
    # the firings are marked in the profiles, entered to be written with the command's record
    assert sorted(touched) == [user_key("carter"), user_key("viewer")]
    assert all(entry[1:] == ("cmd", True) for entry in touched.values())


def _scenario(
    stored: list[Profile],
) -> tuple[TriggerRunner, dict[str, Profile]]:
    rows = {p.user_id: p for p in stored}

    def local_rows(partition: int) -> Iterator[tuple[bytes, bytes]]:
        yield from ((user_key(u), p.pack()) for u, p in list(rows.items()))

    ports = _ports(local_rows, None)
    return TriggerRunner(ports), rows


def _run(
    runner: TriggerRunner, rows: dict[str, Profile], changes: list[tuple[dict[str, Any], int]],
    touched: dict[bytes, Any] | None = None,
) -> list[str]:  # fmt: skip
    """One batch: the pass, then its writes (the touched profiles stored, the erased deleted)."""
    touched = {} if touched is None else touched
    fired = asyncio.run(runner.items_changed(0, changes, touched, "cmd"))
    for user, (profile, _, _) in touched.items():
        name = user.decode()
        if profile is None:
            rows.pop(name, None)
        else:
            rows[profile.user_id] = profile
    return sorted(t.trigger_id for t in fired)


def test_a_replayed_item_change_fires_nothing_again() -> None:
    """A signed `item_changed` command produced again (a copy of the record, or the record
    redelivered after a crash) fired its price drop and back in stock again, the back-in-stock
    one under a new trigger id (it took the clock's time): duplicate e-mails."""
    runner, rows = _scenario([_profile("carter", [("add_to_cart", "A")])])
    change = (_command("A", 8.0, 10.0, ["back_in_stock", "price_drop"]), T0 + 5)
    first = _run(runner, rows, [change])
    assert first == [f"back_in_stock:carter:A:{T0 + 5}", "price_drop:carter:A:8.0"]
    cast(ManualClock, runner.ports.clock).advance(3_600_000)
    assert _run(runner, rows, [change]) == []  # the replay, an hour later
    older = (_command("A", 9.0, 10.0, ["price_drop"]), T0 + 1)
    assert _run(runner, rows, [older]) == []  # an older change's copy
    newer = (_command("A", 6.0, 8.0, ["price_drop"]), T0 + 20)
    assert _run(runner, rows, [newer]) == ["price_drop:carter:A:6.0"]


def test_item_changes_see_the_batch_erasures_withdrawals_and_newcomers() -> None:
    """The pass read the stored profiles only: a user erased earlier in the same batch (their
    tombstones already sent) or who withdrew e-mail consent in it still got the item's triggers,
    after the erasure; a user new in the batch got none."""
    stored = [_profile(u, [("add_to_cart", "A")]) for u in ("erased", "withdrew", "stays")]
    runner, rows = _scenario(stored)
    withdrew = apply(
        rows["withdrew"],
        validate({"event_id": "w", "type": "consent", "user_id": "withdrew", "ts": T0 + 9,
                  "props": {"email": False}}),
    )  # fmt: skip
    touched: dict[bytes, Any] = {
        user_key("erased"): (None, "erase", True),
        user_key("withdrew"): (withdrew, "event", True),
        user_key("newcomer"): (_profile("newcomer", [("add_to_cart", "A")]), "event", True),
    }
    got = _run(runner, rows, [(_command("A", 8.0, 10.0, ["price_drop"]), T0 + 5)], touched)
    assert got == ["price_drop:newcomer:A:8.0", "price_drop:stays:A:8.0"]
    assert touched[user_key("erased")] == (None, "erase", True)  # still erased
    assert touched[user_key("newcomer")][1:] == ("event", True)  # its own record kept


def _ports(local_rows: Any, send: Any) -> TriggerPorts:
    """Trigger ports at T0 + 10 over `local_rows`; the ports these tests do not reach are None."""
    never: Any = None
    settings = SimpleNamespace(
        abandoned_cart_minutes=30,
        trigger_max_age_hours=0,  # 2010-11 event times: no bound on their age
        abandoned_cart_pending_max=200_000,
        consent_granted_by_default=True,
    )
    return TriggerPorts(
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
