"""The trigger runner's sweep over every local profile is paced by its own cost: while a worker
catches up (an hour of event time every few seconds) it sweeps at most 1 / (1 + SWEEP_REST) of the
time, on a controllable wall clock and event clock."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from engine.clock import ManualClock
from engine.events import validate
from engine.profile import apply
from engine.settings import load_settings
from streams.keys import user_key
from streams.triggers import SWEEP_EVERY_MS, SWEEP_REST, TriggerPorts, TriggerRunner

T0 = 1_700_000_000_000
HOUR = 3_600_000


def _runner(sweep_seconds: float) -> tuple[TriggerRunner, ManualClock, list[float], list[int]]:
    clock, wall, reads = ManualClock(T0), [1000.0], []
    profile = apply(
        None,
        validate({"event_id": "e", "type": "add_to_cart", "user_id": "u", "ts": T0,
                  "item_id": "lamp"}),
    )  # fmt: skip

    def rows(partition: int) -> list[tuple[bytes, bytes]]:
        reads.append(partition)
        wall[0] += sweep_seconds  # reading every profile takes this long
        return [(user_key("u"), profile.pack())]

    settings = SimpleNamespace(
        abandoned_cart_minutes=10,
        trigger_max_age_hours=0,  # 2010-11 event times: no bound on their age
        abandoned_cart_pending_max=200_000,
        churn_threshold=0.5,
        consent_granted_by_default=True,
    )
    ports = TriggerPorts(
        clock=clock,
        settings=cast(Any, settings),
        local_partitions=lambda: [0],
        local_rows=rows,
        send=cast(Any, None),
        send_command=cast(Any, None),
        scorer=lambda: None,
        webhooks=lambda: None,
        ready=lambda: True,
        wall=lambda: wall[0],
    )
    return TriggerRunner(ports), clock, wall, reads


def test_a_sweep_rests_in_proportion_to_what_it_took() -> None:
    runner, clock, wall, reads = _runner(sweep_seconds=10.0)
    clock.set(T0 + SWEEP_EVERY_MS)
    asyncio.run(runner.sweep())
    assert reads == [0] and "u" in runner._pending  # swept: the cart's check is scheduled
    clock.set(T0 + 5 * HOUR)  # hours of event time later (a catch-up), but only 100 s of wall
    wall[0] += 100.0
    asyncio.run(runner.sweep())
    assert reads == [0]
    wall[0] += SWEEP_REST * 10.0 - 100.0  # the rest after a 10 s sweep is over
    asyncio.run(runner.sweep())
    assert reads == [0, 0]


def test_cheap_sweeps_still_follow_event_time() -> None:
    runner, clock, wall, reads = _runner(sweep_seconds=0.001)
    for hour in range(1, 4):
        clock.set(T0 + hour * HOUR)
        wall[0] += 1.0
        asyncio.run(runner.sweep())
        asyncio.run(runner.sweep())  # within the same hour of event time: nothing
    assert reads == [0, 0, 0]


@pytest.mark.parametrize("bound", [10, 37])
def test_a_flood_of_carts_keeps_the_schedule_bounded_and_loses_no_check(bound: int) -> None:
    """Every user with a cart had an entry in the in-memory schedule: a flood of distinct users
    with carts grew the worker without bound. The schedule is bounded by the setting
    PERSONA_ABANDONED_CART_PENDING_MAX (read as the worker reads its settings: before, a constant
    of 200,000 that no setting changed); the checks it sheds are scheduled again by a sweep once
    the first of them is due, and none is lost."""
    users = [f"u{n:03d}" for n in range(100)]
    profiles = {
        u: apply(None, validate({"event_id": u, "type": "add_to_cart", "user_id": u,
                                 "ts": T0 + n * 60_000, "item_id": "lamp"}))
        for n, u in enumerate(users)
    }  # fmt: skip
    clock, checked, sizes = ManualClock(T0), [], []

    async def send_command(key: bytes, body: bytes, partition: int | None) -> None:
        checked.append(key.decode())
        profiles.pop(key.decode())  # the check fires it: the profile no longer waits

    env = {"PERSONA_ABANDONED_CART_MINUTES": "10", "PERSONA_ABANDONED_CART_PENDING_MAX": str(bound)}
    ports = TriggerPorts(
        clock=clock,
        settings=load_settings({}, env=env),
        local_partitions=lambda: [0],
        local_rows=lambda p: [(user_key(u), pr.pack()) for u, pr in list(profiles.items())],
        send=cast(Any, None),
        send_command=send_command,
        scorer=lambda: None,
        webhooks=lambda: None,
        ready=lambda: True,
        wall=lambda: 0.0,
    )
    runner = TriggerRunner(ports)
    runner._pacer.due = lambda: True  # type: ignore[method-assign]
    runner.evaluate(cast(Any, {user_key(u): (p, None, False) for u, p in profiles.items()}))
    assert bound - bound // 10 <= len(runner._pending) <= bound  # shed to nine tenths, no more
    assert set(runner._pending) <= set(users[:bound])  # the earliest due are kept
    for minute in range(0, 200):
        clock.set(T0 + minute * 60_000)
        asyncio.run(runner.check_due())
        asyncio.run(runner.sweep())
        sizes.append(len(runner._pending))
    assert max(sizes) <= bound
    assert sorted(checked) == users  # each checked once, none lost


def test_the_schedule_bound_defaults_to_200000() -> None:
    """Unset, the bound is the old constant's: 200,000 carts schedule without any shed."""
    never: Any = None
    settings = load_settings({}, env={})
    assert settings.abandoned_cart_pending_max == 200_000
    ports = TriggerPorts(ManualClock(T0), settings, never, never, never, never, never, never, never)
    runner = TriggerRunner(ports)
    for n in range(200_000):
        runner._schedule(f"u{n}", T0 + n)
    assert len(runner._pending) == 200_000 and runner._shed_due is None
    runner._schedule("one-more", T0 + 200_000)
    assert len(runner._pending) == 180_000 and runner._shed_due == T0 + 180_000
