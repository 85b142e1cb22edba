"""How far the fold lags behind the events this process accepted, and waiting for it (issue 16).

On the embedded broker the topics live in memory: an event the broker acknowledged but the worker
had not folded yet is lost if everything is killed at once. `POST /v1/events` answers only once
the broker acknowledged the request's events; with `Backlog` it also answers only once the fold
is within `limit` events of what this process produced (or after `wait` seconds: the events are
in the broker either way, and a worker that restarts folds them). A client that posts as fast as
it can is held to the fold's pace, so the events at risk stay about `limit` plus the requests in
flight, instead of growing with the backlog (measured before it: 4,500 to 14,400 accepted events
lost per SIGKILL of everything, `benchmarks/kill_window.py`).

The fold's progress is read from the input positions (`streams.positions`), which the worker
stores with the state only once they are durable; `position(topic, partition)` gives the stored
position, None when the partition has none yet (offset 0).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

# `persona run` sets this in its children's environment when it runs the embedded broker: only
# there does the wait apply (on Kafka the broker keeps what it acknowledged; nothing changes).
EMBEDDED_ENV = "PERSONA_RUN_EMBEDDED_BROKER"
UNFOLDED_LIMIT = 1_000  # events this process produced that the fold may lag behind
# Seconds a POST /v1/events waits for the fold at most: well under the request timeout (10 s by
# default), so a request that waited still answers 202 (with 10 s here it answered 503 whenever
# the fold was busy, e.g. with the demo load: the events were in the broker all the same).
UNFOLDED_WAIT = 3.0
POLL = 0.02  # seconds between two looks at the positions

Position = Callable[[str, int], int | None]


def hold_wait(request_timeout: float) -> float:
    """How long a POST may wait for the fold: UNFOLDED_WAIT, at most a third of the timeout."""
    return min(UNFOLDED_WAIT, request_timeout / 3)


class Backlog:
    """The end offsets this process produced per input partition, against the fold's positions."""

    def __init__(
        self, position: Position, limit: int = UNFOLDED_LIMIT, wait: float = UNFOLDED_WAIT
    ) -> None:
        self.position = position
        self.limit = limit
        self.wait = wait
        self.waited = 0  # requests that waited for the fold
        self.timed_out = 0  # requests answered after `wait` with the fold still behind
        self._ends: dict[tuple[str, int], int] = {}

    def produced(self, acks: Iterable[tuple[str, int, int]]) -> None:
        """Note acknowledged records: (topic, partition, offset)."""
        for topic, partition, offset in acks:
            key = (topic, partition)
            if offset + 1 > self._ends.get(key, 0):
                self._ends[key] = offset + 1

    def unfolded(self) -> int:
        """Events produced here that the fold has not stored yet (partitions caught up are
        forgotten)."""
        total = 0
        for key, end in list(self._ends.items()):
            behind = end - (self.position(*key) or 0)
            if behind <= 0:
                del self._ends[key]
            else:
                total += behind
        return total

    async def settle(self) -> None:
        """Return once the fold is within `limit` events, or after `wait` seconds."""
        if self.unfolded() <= self.limit:
            return
        self.waited += 1
        deadline = time.monotonic() + self.wait
        while self.unfolded() > self.limit:
            if time.monotonic() >= deadline:
                self.timed_out += 1
                return
            await asyncio.sleep(POLL)
