"""The data dir's free space read at most once a second (engine/room.py), on a manual clock and a
fake free-space reading."""

from __future__ import annotations

from pathlib import Path

from engine.clock import ManualClock
from engine.room import READ_EVERY_MS, WARN_EVERY_MS, Room

MIN = 16 << 20


class FakeDisk:
    def __init__(self, free: int) -> None:
        self.free = free
        self.reads: list[Path] = []
        self.broken = False

    def __call__(self, path: Path) -> int:
        self.reads.append(path)
        if self.broken:
            raise OSError(2, "No such file or directory", str(path))
        return self.free


def _room(free: int) -> tuple[ManualClock, FakeDisk, Room]:
    clock, disk = ManualClock(5_000), FakeDisk(free)
    return clock, disk, Room(Path("/data"), disk, MIN, clock)


def test_the_reading_is_cached_for_a_second() -> None:
    clock, disk, room = _room(MIN - 1)
    assert all(room.full() for _ in range(1000))
    assert disk.reads == [Path("/data")]
    disk.free = MIN
    clock.advance(READ_EVERY_MS - 1)
    assert room.full()  # still the cached reading
    assert len(disk.reads) == 1
    clock.advance(1)
    assert not room.full()
    assert len(disk.reads) == 2


def test_full_only_under_the_minimum() -> None:
    _, _, room = _room(MIN)
    assert not room.full() and room.free() == MIN
    _, _, room = _room(MIN - 1)
    assert room.full()


def test_a_fresh_reading_refreshes_the_cache() -> None:
    _, disk, room = _room(MIN - 1)
    assert room.full()
    disk.free = 10 * MIN
    assert room.read() == 10 * MIN
    assert not room.full()
    assert len(disk.reads) == 2


def test_an_unreadable_data_dir_is_not_full() -> None:
    _, disk, room = _room(0)
    disk.broken = True
    assert room.read() is None
    assert not room.full()


def test_a_warning_is_due_once_a_minute() -> None:
    clock, _, room = _room(0)
    assert room.warn_due()
    assert not room.warn_due()
    clock.advance(WARN_EVERY_MS - 1)
    assert not room.warn_due()
    clock.advance(1)
    assert room.warn_due()
