"""Triggers about old things are recorded, not sent (PERSONA_TRIGGER_MAX_AGE_HOURS): a replay of
last year's events, into an empty engine (event time a year behind the wall clock) or into one
whose clock is current (the old carts due at once), e-mails nobody about a year-old cart. A cart
of a stream that went quiet for a day still fires at the resume (within the bound)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from engine.catalog import Product
from engine.clock import ManualClock
from engine.events import validate
from engine.profile import Profile, apply
from engine.triggers import ABANDONED_CART, BACK_IN_STOCK, CHURN_RISK, PRICE_DROP
from streams.triggers import TriggerPorts, TriggerRunner

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
NOW = int(time.time() * 1000)  # the real wall clock: what a worker's default port reads
YEAR_AGO = NOW - 365 * DAY


def _event(user: str, n: int, kind: str, ts: int, **extra: Any) -> Any:
    return validate({"event_id": f"{user}-{n}", "type": kind, "user_id": user, "ts": ts, **extra})


def _runner(
    event_ms: int,
    wall: ManualClock | None = None,
    scores: list[float] | None = None,
    max_age_hours: float = 72,
    **ports: Any,
) -> TriggerRunner:
    settings = SimpleNamespace(
        abandoned_cart_minutes=60,
        abandoned_cart_pending_max=200_000,
        churn_threshold=0.5,
        consent_granted_by_default=True,
        trigger_max_age_hours=max_age_hours,
    )
    scorer = (
        None
        if scores is None
        else SimpleNamespace(churn=SimpleNamespace(score_batch=lambda m: np.array(scores)))
    )
    never: Any = None
    extra: dict[str, Any] = {} if wall is None else {"wall_clock": wall}
    return TriggerRunner(
        TriggerPorts(
            clock=ManualClock(event_ms),
            settings=cast(Any, settings),
            local_partitions=never,
            local_rows=lambda partition: [],
            send=never,
            send_command=never,
            scorer=lambda: cast(Any, scorer),
            webhooks=lambda: None,
            ready=never,
            **extra,
            **ports,
        )
    )


def _cart(user: str, ts: int) -> Profile:
    profile = apply(None, _event(user, 1, "product_view", ts, item_id="lamp"))
    return apply(profile, _event(user, 2, "add_to_cart", ts, item_id="lamp"))


def _evaluate(runner: TriggerRunner, profile: Profile) -> tuple[list[str], Profile]:
    touched: Any = {profile.user_id.encode(): (profile, None, False)}
    fired = runner.evaluate(touched)
    after = touched[profile.user_id.encode()][0]
    return [t.trigger for t in fired], after


def test_a_replay_into_an_empty_engine_sends_no_year_old_abandoned_cart() -> None:
    # event time is the replayed data's (a year ago); the worker's wall clock is today
    runner = _runner(YEAR_AGO + 2 * HOUR)
    fired, after = _evaluate(runner, _cart("ann", YEAR_AGO))
    assert fired == []
    assert after.fired.get(ABANDONED_CART) == YEAR_AGO  # recorded: it never fires later either
    assert runner.ports.stale == {ABANDONED_CART: 1}


def test_a_replay_into_a_current_engine_sends_no_year_old_abandoned_cart() -> None:
    # the stream's clock is today (live events of other users); the replayed cart is a year old
    runner = _runner(NOW, ManualClock(NOW))
    fired, _ = _evaluate(runner, _cart("bob", YEAR_AGO))
    assert fired == []


def test_a_recent_abandoned_cart_still_fires() -> None:
    runner = _runner(NOW, ManualClock(NOW))
    fired, _ = _evaluate(runner, _cart("cy", NOW - 2 * HOUR))
    assert fired == [ABANDONED_CART]


def test_a_day_long_quiet_stream_fires_the_cart_at_the_resume() -> None:
    """The clock stays at the last event while the stream is quiet; the first event after a
    day's outage moves it and the cart left before it fires then (late, within the bound)."""
    left = NOW - 26 * HOUR
    wall = ManualClock(NOW)
    runner = _runner(left + 30 * MIN, wall)  # quiet since: not due yet
    fired, profile = _evaluate(runner, _cart("dee", left))
    assert fired == []
    cast(ManualClock, runner.ports.clock).set(NOW)  # the resume
    fired, _ = _evaluate(runner, profile)
    assert fired == [ABANDONED_CART]


def test_the_bound_is_a_setting_and_zero_lifts_it() -> None:
    runner = _runner(YEAR_AGO + 2 * HOUR, ManualClock(NOW))
    runner._max_age_ms = 0
    fired, _ = _evaluate(runner, _cart("eve", YEAR_AGO))
    assert fired == [ABANDONED_CART]


def test_a_churn_crossing_in_replayed_event_time_is_recorded_not_sent() -> None:
    profile = apply(None, _event("fay", 1, "product_view", YEAR_AGO, item_id="lamp"))
    profile.fired[CHURN_RISK] = 0  # scored before, below the threshold
    runner = _runner(YEAR_AGO + 30 * DAY, ManualClock(NOW), scores=[0.9])
    fired, after = _evaluate(runner, profile)
    assert fired == []
    assert after.fired[CHURN_RISK] == YEAR_AGO + 30 * DAY  # high: re-arms only once it falls


def test_a_churn_crossing_today_is_sent() -> None:
    profile = apply(None, _event("gus", 1, "product_view", NOW - 200 * DAY, item_id="lamp"))
    profile.fired[CHURN_RISK] = 0
    runner = _runner(NOW, ManualClock(NOW), scores=[0.9])
    fired, _ = _evaluate(runner, profile)
    assert fired == [CHURN_RISK]


async def test_back_in_stock_and_price_drop_skip_year_old_carts_and_views() -> None:
    old_cart = _cart("hal", YEAR_AGO)
    old_view = apply(None, _event("ida", 1, "product_view", YEAR_AGO, item_id="lamp"))
    new_view = apply(None, _event("jo", 1, "product_view", NOW - HOUR, item_id="lamp"))
    old_view_new_cart = apply(
        apply(None, _event("kim", 1, "product_view", YEAR_AGO, item_id="lamp")),
        _event("kim", 2, "add_to_cart", NOW - HOUR, item_id="lamp"),
    )
    runner = _runner(NOW, ManualClock(NOW))
    lamp = Product("lamp", "Lamp", "https://s.example/l", "https://s.example/l.jpg", 9.0, "GBP")
    command = {
        "command": "item_changed",
        "product": lamp.to_dict(),
        "kinds": [BACK_IN_STOCK, PRICE_DROP],
        "old_price": 12.0,
    }
    touched: Any = {
        p.user_id.encode(): (p, None, False)
        for p in (old_cart, old_view, new_view, old_view_new_cart)
    }
    fired = await runner.items_changed(0, [(command, NOW)], touched, cast(Any, None))
    assert sorted((t.user_id, t.trigger) for t in fired) == [
        ("jo", BACK_IN_STOCK),
        ("jo", PRICE_DROP),
        ("kim", BACK_IN_STOCK),
        ("kim", PRICE_DROP),
    ]
    # recorded for all: a redelivered command fires nothing, whatever the bound
    assert all(touched[u][0].fired for u in (b"hal", b"ida"))


def test_by_default_a_replay_fires_as_it_would_have_then() -> None:
    """The contract's clock: a replay of last year's data fires as it would have then. The bound
    is a shop's choice (PERSONA_TRIGGER_MAX_AGE_HOURS), off unless set."""
    from engine.settings import Settings

    assert Settings().trigger_max_age_hours == 0
    runner = _runner(YEAR_AGO + 2 * HOUR, ManualClock(NOW))
    runner._max_age_ms = int(Settings().trigger_max_age_hours * HOUR)
    fired, _ = _evaluate(runner, _cart("kim", YEAR_AGO))
    assert fired == [ABANDONED_CART]


def test_a_bound_under_a_millisecond_is_a_bound_not_none() -> None:
    """The setting takes any hours above 0 as a bound (0 alone lifts it): 1e-7 hours (0.36 ms)
    rounded down to 0 ms, which `stale` reads as no bound, so a two-hour-old cart was sent."""
    runner = _runner(NOW, ManualClock(NOW), max_age_hours=1e-7)
    fired, _ = _evaluate(runner, _cart("lee", NOW - 2 * HOUR))
    assert fired == []
    assert runner.ports.stale == {ABANDONED_CART: 1}
