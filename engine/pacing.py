"""Pacing for periodic jobs whose cost grows with the data (a sweep over every local profile, a
ranking over every sold item): after a run that took T seconds the next starts no sooner than
`rest` x T seconds after it ended, so the job takes at most 1 / (1 + rest) of the time however
large the data grows. Pure; the clock is passed in (tests use their own)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Pacer:
    def __init__(self, rest: float, wall: Callable[[], float] = time.monotonic) -> None:
        self.rest = rest
        self._wall = wall
        self._after = float("-inf")  # no run starts before this wall time

    def due(self) -> bool:
        """Whether a run may start now."""
        return self._wall() >= self._after

    @contextmanager
    def running(self) -> Iterator[None]:
        """One run: however it ends, the next waits `rest` times its length."""
        started = self._wall()
        try:
            yield
        finally:
            ended = self._wall()
            self._after = ended + self.rest * (ended - started)
