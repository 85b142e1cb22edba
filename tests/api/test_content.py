"""ContentService: blocks and scores kept across a change of the clock's hour when nothing they
show depends on it; everything else renders again."""

from __future__ import annotations

from dataclasses import replace

import pytest

from api.content import HOUR_MS, ContentService
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.events import validate
from engine.params import from_query
from models.recs import Recommender
from models.registry import ModelSet
from tests.api.test_app import product

T0 = 1_300_000_000_000
DAY_MS = 86_400_000


@pytest.fixture
def state() -> MemoryState:
    s = MemoryState()
    for item in ModelSet.default().recs.popular[:50]:
        s.put_product(product(item))
    return s


def content_of(state: MemoryState) -> ContentService:
    return ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())


def apply(state: MemoryState, user: str, n: int, kind: str, item: str, ts: int) -> None:
    fields = {"event_id": f"{user}-{n}", "type": kind, "user_id": user, "ts": ts, "item_id": item}
    if kind == "purchase":
        fields |= {"quantity": 1, "price": 2.5, "currency": "GBP"}
    state.apply(validate(fields))


@pytest.fixture
def recommend_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = Recommender.recommend

    def counting(self: Recommender, *args: object, **kwargs: object) -> list[str]:
        calls.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Recommender, "recommend", counting)
    return calls


def test_a_new_hour_alone_keeps_the_block_and_its_recommendations(
    state: MemoryState, recommend_calls: list[int]
) -> None:
    items = ModelSet.default().recs.popular
    apply(state, "u1", 1, "product_view", items[0], T0)
    content = content_of(state)
    first = content.block("u1", "recommendations", "html")
    calls = len(recommend_calls)
    assert content.block("u1", "recommendations", "html") is first  # cached

    state.clock.observe(T0 + 3 * HOUR_MS)  # another user's events move the clock on
    again = content.block("u1", "recommendations", "html")
    assert again is first and content.reused == 1
    assert len(recommend_calls) == calls  # recommendations reused: no purchase left the window
    assert content.block("u1", "recommendations", "html") is first  # cached under the new hour
    assert content.cache.hits == 2


def test_a_profile_change_renders_again_whatever_else_moved(state: MemoryState) -> None:
    items = ModelSet.default().recs.popular
    apply(state, "u1", 1, "add_to_cart", items[0], T0)
    content = content_of(state)
    first = content.block("u1", "cart_reminder", "html")
    apply(state, "u1", 2, "add_to_cart", items[1], T0 + 2 * HOUR_MS)  # new hour and a new item
    again = content.block("u1", "cart_reminder", "html")
    assert again is not first and content.reused == 0
    assert set(again.items) == {items[0], items[1]}


def test_a_new_hour_that_changes_the_decision_renders_again(state: MemoryState) -> None:
    """The fallback shows the best-sellers: a new list of the same length (the stamp holds its
    length) with a new hour shows the new list."""
    items = ModelSet.default().recs.popular
    state.popular_items = list(items[:20])
    state.clock.observe(T0)
    content = content_of(state)
    first = content.block("nobody", "recommendations", "html")
    assert first.fallback and first.items[0] == items[0]
    state.popular_items = list(reversed(items[:20]))
    state.clock.observe(T0 + HOUR_MS)
    again = content.block("nobody", "recommendations", "html")
    assert again is not first and again.items[0] == items[19] and content.reused == 0


def test_a_bought_item_stays_excluded_and_the_recommendations_are_reused(
    state: MemoryState, recommend_calls: list[int]
) -> None:
    items = ModelSet.default().recs.popular
    apply(state, "u1", 1, "purchase", items[0], T0)
    content = content_of(state)
    profile = state.profile("u1")
    assert profile is not None
    assert items[0] not in content.scores(profile).recommendations  # bought: excluded
    calls = len(recommend_calls)
    state.clock.observe(T0 + HOUR_MS)
    assert items[0] not in content.scores(profile).recommendations
    assert len(recommend_calls) == calls  # same excluded items: reused
    state.clock.observe(T0 + 400 * DAY_MS)
    later = content.scores(profile)
    assert len(recommend_calls) == calls  # no window to leave: still reused (issue 17)
    assert items[0] not in later.recommendations


def test_an_erasure_leaves_nothing_to_reuse(state: MemoryState) -> None:
    items = ModelSet.default().recs.popular
    apply(state, "u1", 1, "product_view", items[0], T0)
    content = content_of(state)
    first = content.block("u1", "recommendations", "html")
    content.forget("u1")
    state.clock.observe(T0 + HOUR_MS)
    assert content.block("u1", "recommendations", "html") is not first and content.reused == 0


def test_a_consumable_comes_back_after_its_window_through_the_service() -> None:
    """BlockPolicy.repeat (PERSONA_REPEAT_ITEMS, persona/worker.py and reader.py) reaches the
    scores a block is made from, and the cached scores follow the clock past the window."""
    from engine.clock import ManualClock
    from engine.repeat import DAY_MS, parse_repeat
    from models.churn import train_churn
    from models.recs import train_recs
    from tests.models.synthetic import basket_events, churn_events

    start = 2_000_000_000_000
    wall = ManualClock(start)
    state = MemoryState(wall)
    for item in ("a", "a2", "b", "b2", "c", "c2", "pop"):
        state.put_product(product(item))
    models = ModelSet(train_churn(churn_events()), train_recs(basket_events(), k=5))
    policy = BlockPolicy(repeat=parse_repeat("item:a2@30"))
    service = ContentService(state, models, Renderer(), policy)
    for n, item in enumerate(("a", "a2")):
        event = {"event_id": f"p{n}", "type": "purchase", "user_id": "y", "item_id": item}
        state.apply(validate({**event, "ts": start, "price": 2.5, "currency": "GBP"}))
    profile = state.profile("y")
    assert profile is not None
    assert "a2" not in service.scores(profile).recommendations
    wall.set(start + 31 * DAY_MS)  # the stream's clock moves with a later event
    view = {"event_id": "v", "type": "page_view", "user_id": "z", "ts": start + 31 * DAY_MS}
    state.apply(validate(view))
    assert "a2" in service.scores(profile).recommendations
    plain = ContentService(state, models, Renderer(), BlockPolicy())
    assert "a2" not in plain.scores(profile).recommendations


def test_an_erasure_applied_elsewhere_never_brings_back_the_erased_profile(
    state: MemoryState,
) -> None:
    """The worker folds an erasure; this process (a reader, or the worker when a reader took the
    DELETE) is never told. A user who comes back with as many events as before has the same
    profile version: the block cached from the erased profile must not be served for the new one."""
    items = ModelSet.default().recs.popular
    apply(state, "u1", 1, "add_to_cart", items[0], T0)
    content = content_of(state)
    for fmt in ("html", "json"):
        assert content.block("u1", "cart_reminder", fmt).items == (items[0],)
    assert content.scores(state.profiles["u1"]).recommendations
    state.profiles.pop("u1")  # erased by the worker
    apply(state, "u1", 2, "add_to_cart", items[5], T0 + 60_000)  # back: one event again
    assert state.profiles["u1"].version == 1
    for fmt in ("html", "json"):
        again = content.block("u1", "cart_reminder", fmt)
        assert again.items == (items[5],) and items[0] not in again.content
    recs = content.scores(state.profiles["u1"]).recommendations
    assert items[5] not in recs  # scored from the new profile (its cart), not the erased one


def test_an_erased_user_asked_for_leaves_nothing_cached_here(state: MemoryState) -> None:
    """A block asked for a user whose profile is gone (erased by another process) drops what
    this process kept about them: nothing personal stays in its memory."""
    items = ModelSet.default().recs.popular
    apply(state, "u1", 1, "product_view", items[0], T0)
    content = content_of(state)
    content.block("u1", "recommendations", "html")
    content.block("u1", "recommendations", "json", params=from_query([("n", "3")]))
    assert content.cached_blocks("u1")
    state.profiles.pop("u1")
    assert content.block("u1", "recommendations", "html").fallback
    assert content.cached_blocks("u1") == [] and "u1" not in content._scores


def test_a_sale_that_ends_within_the_hour_leaves_the_cached_blocks_at_once(
    state: MemoryState,
) -> None:
    """A sale's start and end are catalog data that does not change the catalog: the cached
    block must not show the sale price past its end (nor the list price past a sale's start),
    whatever the hour of the clock."""
    items = ModelSet.default().recs.popular
    start = T0 - T0 % HOUR_MS  # the top of an hour
    ends, starts = start + 20 * 60_000, start + 40 * 60_000
    state.put_product(replace(product(items[0]), sale_price=1.0, sale_ends=ends))
    state.put_product(replace(product(items[1]), sale_price=0.5, sale_starts=starts))
    apply(state, "u1", 1, "add_to_cart", items[0], start + 60_000)
    apply(state, "u1", 2, "add_to_cart", items[1], start + 60_000)
    content = content_of(state)
    nobody = content.block("nobody", "recommendations", "json", params=from_query([("n", "3")]))
    assert '"price": 1.0' in nobody.content
    for fmt in ("html", "json"):
        block = content.block("u1", "cart_reminder", fmt)
        assert "1.0" in block.content and "0.5" not in block.content
    state.clock.observe(ends)  # the same hour: the first sale is over
    nobody = content.block("nobody", "recommendations", "json", params=from_query([("n", "3")]))
    assert '"price": 1.0' not in nobody.content
    for fmt in ("html", "json"):
        assert "1.0" not in content.block("u1", "cart_reminder", fmt).content
    state.clock.observe(starts)  # the second one starts
    for fmt in ("html", "json"):
        assert "0.5" in content.block("u1", "cart_reminder", fmt).content
