"""The fold's backlog of the events a process accepted (streams/backlog.py)."""

from __future__ import annotations

import asyncio

from streams.backlog import Backlog


def test_unfolded_counts_what_the_positions_have_not_reached() -> None:
    positions = {("cart", 0): 5, ("cart", 1): None}
    backlog = Backlog(lambda t, p: positions[(t, p)], limit=3)
    backlog.produced([("cart", 0, 9), ("cart", 0, 7), ("cart", 1, 2)])
    assert backlog.unfolded() == (10 - 5) + (3 - 0)
    positions[("cart", 0)] = 10
    assert backlog.unfolded() == 3  # partition 0 caught up: forgotten
    positions[("cart", 0)] = 0  # a reset partition cannot bring back what was forgotten
    assert backlog.unfolded() == 3


def test_settle_waits_until_the_fold_is_within_the_limit() -> None:
    looks: list[int] = []

    def position(topic: str, partition: int) -> int:
        looks.append(1)
        return 10 * len(looks)  # the fold moves on between two looks

    backlog = Backlog(position, limit=5, wait=3600.0)
    backlog.produced([("clickstream", 0, 99)])
    asyncio.run(backlog.settle())
    assert backlog.unfolded() == 0 and len(looks) >= 10
    assert (backlog.waited, backlog.timed_out) == (1, 0)


def test_settle_gives_up_after_its_wait_when_the_fold_stands_still() -> None:
    backlog = Backlog(lambda t, p: 0, limit=5, wait=0.0)
    backlog.produced([("cart", 0, 99)])
    asyncio.run(backlog.settle())
    assert (backlog.waited, backlog.timed_out) == (1, 1)
    assert backlog.unfolded() == 100  # still behind: the request is answered anyway


def test_within_the_limit_nothing_waits() -> None:
    backlog = Backlog(lambda t, p: 0, limit=100, wait=0.0)
    backlog.produced([("cart", 0, 99)])
    asyncio.run(backlog.settle())
    assert (backlog.waited, backlog.timed_out) == (0, 0)


def test_a_post_waits_for_the_fold_well_within_the_request_timeout() -> None:
    """A wait as long as the request timeout answered 503 while the fold was busy (the demo
    load): the events were in the broker, so the answer must be the 202."""
    from streams.backlog import UNFOLDED_WAIT, hold_wait

    assert hold_wait(10.0) == UNFOLDED_WAIT <= 10.0 / 3
    assert hold_wait(1.5) == 0.5
