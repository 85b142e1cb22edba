"""What a publishable key may send (engine/collect.py)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.collect import collect_refusal
from engine.events import Event, validate

T0 = 1_700_000_000_000


def ev(type_: str, item: str | None = "A", **extra: Any) -> Event:
    data = {"event_id": f"e-{type_}", "type": type_, "user_id": "anon-1", "ts": T0}
    if item is not None:
        data["item_id"] = item
    return validate(data | extra)


@pytest.mark.parametrize(
    "event",
    [
        ev("page_view", item=None),
        ev("product_view"),
        ev("category_view", item=None, props={"category": "Candles"}),
        ev("search", item=None, props={"query": "tea"}),
        ev("add_to_cart"),
        ev("remove_from_cart"),
        ev("checkout", item=None),
        ev("identify", item=None, user_id="u1", props={"previous_id": "anon-1"}),
        ev("consent", item=None, props={"personalization": False, "text_version": "v2"}),
    ],
    ids=lambda e: e.type,
)
def test_browser_events_pass(event: Event) -> None:
    assert collect_refusal(event, purchases=False) is None


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ev("like"), "clickstream and cart events only"),
        (ev("comment", props={"text": "hi"}), "clickstream and cart events only"),
        (ev("purchase"), "events:collect-purchase"),
        (ev("consent", item=None, props={"ads": True}), "only withdraw"),
        (ev("consent", item=None, props={"ads": False, "email": True}), "only withdraw"),
    ],
)
def test_what_a_publishable_key_may_not_send(event: Event, reason: str) -> None:
    refusal = collect_refusal(event, purchases=False)
    assert refusal is not None and reason in refusal


def test_a_purchase_passes_with_the_purchase_scope() -> None:
    assert collect_refusal(ev("purchase"), purchases=True) is None
    assert collect_refusal(ev("like"), purchases=True) is not None
