"""Progress display for the command line (rich): counting bars for replay, catalog import and
publishing, `track` for reading event files, `step` for phases with no count (training,
evaluation).

rich rather than tqdm: it is already in the environment of the dev tools, draws several tasks
(reading, then each model) in one live display, and degrades to one summary line per task when
stderr is not a terminal (CI logs, pipes), so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

T = TypeVar("T")


def _console() -> Console:
    return Console(stderr=True)


def _columns(total: int | None) -> list[object]:
    if total:
        return [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[rate]}"),
        ]
    return [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,.0f}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[rate]}"),
    ]


class Progress:
    """A counting progress bar on stderr: `progress(done)` as work goes, `close(done)` at the end
    (prints `label: N in S s (R/s)` in every case, a live bar only on a terminal)."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label = label
        self.total = total
        self.started = time.monotonic()
        console = _console()
        self._live: RichProgress | None = None
        if console.is_terminal:
            self._live = RichProgress(*_columns(total), console=console, transient=True)  # type: ignore[arg-type]
            self._task = self._live.add_task(label, total=total, rate="")
            self._live.start()

    def __call__(self, done: int) -> None:
        if self._live is not None:
            rate = done / max(time.monotonic() - self.started, 1e-9)
            self._live.update(self._task, completed=done, rate=f"{rate:,.0f}/s")

    def close(self, done: int) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        elapsed = time.monotonic() - self.started
        rate = done / max(elapsed, 1e-9)
        sys.stderr.write(f"{self.label}: {done:,} in {elapsed:.1f} s ({rate:,.0f}/s)\n")
        sys.stderr.flush()


def track(
    items: Iterable[T], label: str, total: int | None = None, every: int = 1000
) -> Iterator[T]:
    """Yield `items`, counting them on a progress bar (updated every `every` items)."""
    progress = Progress(label, total)
    done = 0
    try:
        for item in items:
            yield item
            done += 1
            if done % every == 0:
                progress(done)
    finally:
        progress.close(done)


@contextmanager
def step(label: str) -> Iterator[None]:
    """A phase without a count (training a model, evaluating): a spinner with the elapsed time on
    a terminal, then `label: done in S s`."""
    started = time.monotonic()
    console = _console()
    if console.is_terminal:
        with console.status(f"{label}…"):
            yield
    else:
        yield
    sys.stderr.write(f"{label}: done in {time.monotonic() - started:.1f} s\n")
    sys.stderr.flush()
