"""When `persona run` restarts a child that died, and when it gives up. Pure: the clock is injected
(tests drive it with `engine.clock.ManualClock`).

A child that dies is started again after a delay that doubles from `BASE_DELAY` up to `MAX_DELAY`
with each failure in a row. A child that stayed up `STABLE_AFTER` seconds or longer before it died
starts a new streak (delay `BASE_DELAY`, attempt 1). A streak longer than `max_restarts` failures
gives up: `persona run` stops everything and names the child and its exits.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from engine.clock import Clock

BASE_DELAY = 0.5  # seconds before the first restart of a streak
MAX_DELAY = 30.0  # the longest wait between two restarts
STABLE_AFTER = 60.0  # seconds up after which a death starts a new streak


@dataclass(frozen=True)
class Restart:
    attempt: int  # 1 for the first restart of a streak
    delay: float  # seconds to wait before starting the child again


@dataclass(frozen=True)
class GiveUp:
    exits: tuple[str, ...]  # how each start of the streak ended, oldest first


class MonotonicClock:
    """`time.monotonic` as a `Clock` (wall-clock jumps must not reset or lengthen a streak)."""

    def now_ms(self) -> int:
        return int(time.monotonic() * 1000)


class RestartPolicy:
    """One child's restart streak: call `started()` at each start, `failed()` at each death."""

    def __init__(
        self,
        clock: Clock,
        max_restarts: int = 5,
        base: float = BASE_DELAY,
        cap: float = MAX_DELAY,
        stable_after: float = STABLE_AFTER,
    ) -> None:
        self.clock = clock
        self.max_restarts = max_restarts
        self.base, self.cap, self.stable_after = base, cap, stable_after
        self._started_ms = clock.now_ms()
        self._exits: list[str] = []

    def started(self) -> None:
        self._started_ms = self.clock.now_ms()

    def failed(self, exit: str) -> Restart | GiveUp:
        """The child died (`exit` says how): restart it after a delay, or give up."""
        if self.clock.now_ms() - self._started_ms >= self.stable_after * 1000:
            self._exits.clear()  # it had been up a while: a new streak
        self._exits.append(exit)
        streak = len(self._exits)
        if streak > self.max_restarts:
            return GiveUp(tuple(self._exits))
        return Restart(streak, min(self.cap, self.base * 2 ** (streak - 1)))


def describe_exit(returncode: int) -> str:
    """`subprocess` return code -> words: 'exited with code 1', 'was killed by SIGKILL'."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"
