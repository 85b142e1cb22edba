"""`persona run` clears the readers' secondary directories (`<data_dir>/readers/<index>-<pid>`)
at each start, but only those whose reader is gone: a standalone `persona reader` running against
the same data dir keeps its own (before, the whole `readers/` directory was removed under it).
Real child processes stand for the owners: a python whose argv names `persona reader`, a `sleep`
(a live pid that is no reader: a reused pid), one that exited (reaped, and a zombie)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from persona.reader import cleanup_secondaries

LINUX = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
SLEEP = "import time; time.sleep(120)"


def _secondary(data_dir: Path, index: int, pid: int) -> Path:
    """A secondary directory as a reader leaves it: a table's directory and a file in it."""
    path = data_dir / "readers" / f"{index}-{pid}"
    (path / "profiles").mkdir(parents=True)
    (path / "profiles" / "LOG").write_text("rocksdb info log\n")
    return path


def _dead_pid() -> int:
    """The pid of a process that ran and was reaped (no process has it now)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    return proc.pid


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def _start(procs: list[subprocess.Popen[bytes]], argv: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv)
    procs.append(proc)
    return proc


def _reader_like(procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """A live process whose command line is a reader's: `python -c ... persona reader ...`."""
    argv = [sys.executable, "-c", SLEEP, "persona", "reader", "--index", "0"]
    return _start(procs, argv)


@LINUX
def test_a_live_readers_secondary_is_kept(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    live = _reader_like(procs)
    kept = _secondary(tmp_path, 0, live.pid)
    gone = _secondary(tmp_path, 1, _dead_pid())
    cleanup_secondaries(tmp_path)
    assert (kept / "profiles" / "LOG").read_text() == "rocksdb info log\n"  # untouched
    assert not gone.exists()
    assert live.poll() is None


@LINUX
def test_the_secondaries_of_readers_that_are_gone_are_removed(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    dead = [_secondary(tmp_path, index, _dead_pid()) for index in range(3)]
    removed = cleanup_secondaries(tmp_path)
    assert sorted(removed) == sorted(dead)
    assert not any(path.exists() for path in dead)
    assert (tmp_path / "readers").is_dir()  # the directory itself stays, empty


@LINUX
def test_a_reused_pid_that_is_no_reader_does_not_keep_a_secondary(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """The reader died and its pid now belongs to something else: its directory goes."""
    other = _start(procs, ["sleep", "120"])
    stale = _secondary(tmp_path, 0, other.pid)
    assert cleanup_secondaries(tmp_path) == [stale]
    assert not stale.exists()
    assert other.poll() is None  # nothing happens to the process


@LINUX
def test_a_zombie_reader_does_not_keep_its_secondary(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A reader that exited but was not reaped yet still has its pid; it reads nothing more."""
    zombie = _start(procs, [sys.executable, "-c", "pass", "persona", "reader"])
    stat = Path(f"/proc/{zombie.pid}/stat")
    deadline = time.monotonic() + 10
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.02)
    stale = _secondary(tmp_path, 0, zombie.pid)
    assert cleanup_secondaries(tmp_path) == [stale]
    assert not stale.exists()


@LINUX
def test_what_is_not_a_readers_secondary_is_left_alone(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    readers = tmp_path / "readers"
    readers.mkdir()
    dead = _dead_pid()
    (readers / "notes").mkdir()  # no <index>-<pid> name
    (readers / f"x-{dead}").mkdir()
    (readers / f"0-{dead}-old").mkdir()
    (readers / f"00-{dead}").mkdir()  # not a name serve() gives
    (readers / f"1-{dead}").write_text("a file, not a secondary\n")
    outside = tmp_path / "elsewhere"
    (outside / "profiles").mkdir(parents=True)
    (readers / f"2-{dead}").symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in readers.iterdir())
    assert cleanup_secondaries(tmp_path) == []
    assert sorted(p.name for p in readers.iterdir()) == before
    assert (outside / "profiles").is_dir()  # a link is never followed


def test_no_readers_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert cleanup_secondaries(tmp_path) == []
    assert not (tmp_path / "readers").exists()
