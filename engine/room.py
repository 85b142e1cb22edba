"""How much room the data dir has left, read at most once a second.

While the data dir's file system has less than the minimum a worker needs to start
(persona.state_dir.MIN_FREE), the event routes refuse new events (503, api/event_routes.py): a
worker that died on a full disk is not restarted until there is room (persona/children.py), and
events accepted meanwhile would pile up in the embedded broker's memory. `Room` keeps the last
reading with the (monotonic) time it was taken, so the hot path reads a cached number; the
reading itself (`free_bytes`, statvfs) is given, so tests give a fake one and a manual clock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.clock import Clock

READ_EVERY_MS = 1_000  # a reading older than this is taken again
WARN_EVERY_MS = 60_000  # at most one warning a minute about a full data dir


class Room:
    """The free bytes of `data_dir` (`free_bytes(data_dir)`), cached READ_EVERY_MS on `clock`."""

    def __init__(
        self, data_dir: Path, free_bytes: Callable[[Path], int], min_free: int, clock: Clock
    ) -> None:
        self.data_dir = data_dir
        self.min_free = min_free
        self._free_bytes = free_bytes
        self._clock = clock
        self._free: int | None = None
        self._read_at: int | None = None
        self._warned_at: int | None = None

    def read(self) -> int | None:
        """A fresh reading, kept for the next second; None when the data dir cannot be read
        (gone, or a file system that cannot tell)."""
        try:
            self._free = self._free_bytes(self.data_dir)
        except OSError:
            self._free = None
        self._read_at = self._clock.now_ms()
        return self._free

    def free(self) -> int | None:
        """The last reading, taken again when it is a second old."""
        if self._read_at is None or self._clock.now_ms() - self._read_at >= READ_EVERY_MS:
            return self.read()
        return self._free

    def full(self) -> bool:
        """Whether the data dir has less than `min_free` free (an unreadable one is not full:
        whatever made it so, refusing events would not help)."""
        free = self.free()
        return free is not None and free < self.min_free

    def warn_due(self) -> bool:
        """True at most once per WARN_EVERY_MS: when a refusal should be logged."""
        now = self._clock.now_ms()
        if self._warned_at is not None and now - self._warned_at < WARN_EVERY_MS:
            return False
        self._warned_at = now
        return True
