"""A worker that dies on a full data dir is not counted towards giving up: `persona run` says the
data dir is full and waits for room, then starts it again. Giving up would stop the embedded
broker, and with it every accepted event the worker had not folded yet (measured before: a
worker crashing on ENOSPC was restarted five times, each start failing on the registry's
MANIFEST, and `persona run` stopped everything with tens of thousands of accepted events in the
broker's memory)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.settings import load_settings
from persona import children
from persona.children import Child, Children, GaveUp
from persona.state_dir import MIN_FREE


def _exiting() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])


def _supervisor(
    tmp_path: Path, max_restarts: int
) -> tuple[Children, list[subprocess.Popen[bytes]]]:
    settings = load_settings(
        {"data_dir": str(tmp_path), "max_restarts": max_restarts, "readers": 0}, env={}
    )
    supervisor = Children(settings, {}, threading.Event())
    launched: list[subprocess.Popen[bytes]] = []

    def launch() -> subprocess.Popen[bytes]:
        launched.append(_exiting())
        return launched[-1]

    supervisor.worker = Child("worker", "the worker", launch, supervisor._policy())
    supervisor.broker = None
    return supervisor, launched


def test_a_worker_dead_on_a_full_disk_waits_for_room_instead_of_giving_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(children, "ROOM_POLL", 0.05)
    supervisor, launched = _supervisor(tmp_path, max_restarts=0)  # any counted failure gives up
    room = {"free": 300 * 1024}
    supervisor.free_bytes = lambda path: room["free"]
    supervisor.worker.start()
    launched[0].wait()
    freed = threading.Timer(0.5, lambda: room.update(free=MIN_FREE * 4))
    freed.start()
    began = time.monotonic()
    supervisor._recover(supervisor.worker)  # returns once the worker was started again
    waited = time.monotonic() - began
    freed.join()
    err = capsys.readouterr().err
    assert len(launched) == 2, "started again once there was room"
    assert waited >= 0.4, "not started again while the disk was full"
    assert f"the data dir {tmp_path} is full (300 KiB free, No space left on device)" in err
    assert f"the data dir {tmp_path} has room again (64 MiB free): starting the worker" in err
    assert "giving up" not in err
    for proc in launched:
        proc.wait()


def test_with_room_a_dying_worker_is_counted_as_before(tmp_path: Path) -> None:
    supervisor, launched = _supervisor(tmp_path, max_restarts=0)
    supervisor.free_bytes = lambda path: MIN_FREE
    supervisor.worker.start()
    launched[0].wait()
    with pytest.raises(GaveUp, match="giving up: the worker failed 1 time"):
        supervisor._recover(supervisor.worker)


def test_a_stop_while_waiting_for_room_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(children, "ROOM_POLL", 0.05)
    supervisor, launched = _supervisor(tmp_path, max_restarts=0)
    supervisor.free_bytes = lambda path: 0
    supervisor.worker.start()
    launched[0].wait()
    threading.Timer(0.3, supervisor.stop.set).start()
    with pytest.raises(children.Stop):
        supervisor._recover(supervisor.worker)
    assert len(launched) == 1
