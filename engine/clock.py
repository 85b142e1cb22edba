"""Clocks. The stream's event-time clock is the newest event time seen, never ahead of the wall
clock; everything that needs "now" takes a `Clock` so tests can control time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


class MonotonicClock:
    """Milliseconds of `time.monotonic`: for intervals, never set back with the wall clock."""

    def now_ms(self) -> int:
        return int(time.monotonic() * 1000)


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def set(self, ms: int) -> None:
        self._now = ms

    def advance(self, ms: int) -> None:
        self._now += ms


class EventTimeClock:
    """Newest event time observed, capped at the wall clock. Before any event it reads the wall."""

    def __init__(self, wall: Clock | None = None) -> None:
        self._wall = wall or WallClock()
        self._newest: int | None = None

    def observe(self, ts_ms: int) -> None:
        if self._newest is None or ts_ms > self._newest:
            self._newest = ts_ms

    def now_ms(self) -> int:
        wall = self._wall.now_ms()
        if self._newest is None:
            return wall
        return min(self._newest, wall)

    def behind(self, ts_ms: int) -> int:
        """How far an event time lies behind the stream (0 before any event was seen)."""
        if self._newest is None:
            return 0
        return max(0, self.now_ms() - ts_ms)
