"""The profile's long history (issue 17 item 3): distinct items, their last minute and counts."""

from __future__ import annotations

import itertools

import msgpack

from engine.events import Event, validate
from engine.profile import (
    HISTORY_ITEMS,
    HISTORY_SLACK,
    MINUTE_MS,
    RECENT_ITEMS,
    Profile,
    apply,
    fold,
    history_newest,
)

T0 = 1_700_000_000_000
MIN0 = T0 // MINUTE_MS
_ids = itertools.count()


def ev(item: str | None, ts: int, type_: str = "product_view", **props: object) -> Event:
    data: dict[str, object] = {
        "event_id": f"h{next(_ids)}",
        "type": type_,
        "user_id": "u",
        "ts": ts,
    }
    if item is not None:
        data["item_id"] = item
    if props:
        data["props"] = props
    return validate(data)


def folded(events: list[Event]) -> Profile:
    p = fold(events)
    assert p is not None
    return p


def test_the_history_counts_each_items_signals_and_keeps_its_newest_minute() -> None:
    p = folded(
        [
            ev("a", T0),
            ev("b", T0 + MINUTE_MS),
            ev("a", T0 + 5 * MINUTE_MS, "purchase"),
            ev("a", T0 + 2 * MINUTE_MS, "add_to_cart"),  # late: counted, its minute is older
            ev(None, T0 + 9 * MINUTE_MS, "page_view"),  # no item: not history
            ev("c", T0 + 9 * MINUTE_MS, "remove_from_cart"),  # not a taste signal
        ]
    )
    assert p.history == {"a": (MIN0 + 5, 3), "b": (MIN0 + 1, 1)}
    assert history_newest(p) == [("a", (MIN0 + 5) * MINUTE_MS), ("b", (MIN0 + 1) * MINUTE_MS)]


def test_the_history_reaches_far_beyond_the_recent_items_and_stays_bounded() -> None:
    n = HISTORY_ITEMS + HISTORY_SLACK + 1  # one past the slack: the oldest go
    p = folded([ev(f"i{i}", T0 + i * MINUTE_MS) for i in range(n)])
    assert len(p.recent) == RECENT_ITEMS
    assert len(p.history) == HISTORY_ITEMS
    assert [item for item, _ in history_newest(p)] == [f"i{i}" for i in reversed(range(n))][
        :HISTORY_ITEMS
    ]
    grown = folded([ev(f"j{i}", T0 + i) for i in range(HISTORY_ITEMS + HISTORY_SLACK)])
    assert len(grown.history) == HISTORY_ITEMS + HISTORY_SLACK  # within the slack: all kept


def test_the_history_survives_pack_and_the_map_format() -> None:
    p = folded([ev("a", T0), ev("b", T0 - 3 * 86_400_000), ev("a", T0 + 1)])
    assert p.history == {"a": (MIN0, 2), "b": (MIN0 - 3 * 1440, 1)}
    assert Profile.unpack(p.pack()).history == p.history
    assert Profile.unpack(msgpack.packb(p.to_dict(), use_bin_type=True)).history == p.history
    assert Profile.unpack(folded([ev(None, T0, "page_view")]).pack()).history == {}


def test_a_profile_stored_before_the_history_loads_with_its_recent_items_and_purchases() -> None:
    p = folded([ev("a", T0), ev("b", T0 + MINUTE_MS, "purchase"), ev("a", T0 + 2 * MINUTE_MS)])
    fields = list(msgpack.unpackb(p.pack(), raw=False))
    history_slot = 26  # format 3 as the previous version wrote: no history, nor what came after
    older = msgpack.packb(fields[:history_slot], use_bin_type=True)
    legacy = Profile.unpack(older)
    assert legacy.history == {"a": (MIN0 + 2, 1), "b": (MIN0 + 1, 1)}  # counted once each
    assert legacy.recent == p.recent and legacy.purchased == p.purchased
    newer = apply(legacy, ev("c", T0 + 3 * MINUTE_MS))
    assert Profile.unpack(newer.pack()).history == {**legacy.history, "c": (MIN0 + 3, 1)}
    old_map = p.to_dict()
    del old_map["h"]
    assert Profile.unpack(msgpack.packb(old_map, use_bin_type=True)).history == legacy.history


def test_a_copy_does_not_share_the_history() -> None:
    p = folded([ev("a", T0)])
    q = apply(p, ev("b", T0 + 1))
    assert "b" not in p.history and set(q.history) == {"a", "b"}
