"""`persona run` contains crashes: a killed worker or reader comes back (a log line, a metric), a
killed embedded broker restarts everything on the state kept in the data dir, a child that cannot
start makes it give up after PERSONA_MAX_RESTARTS tries, and a stop during a back-off is a stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.broker import free_port
from tests.conftest import http, wait_until
from tests.persona.test_run import (
    _alive,
    _children,
    _kind,
    _start_run,
    _stop,
    _wait_ready,
    _worker_port,
)

pytestmark = pytest.mark.integration
NAMES = {"worker": "the worker", "reader": "reader 0", "broker": "the embedded broker"}


@dataclass
class Run:
    proc: subprocess.Popen[str]
    base: str
    log: Path
    data_dir: Path

    def child(self, kind: str) -> int:
        (pid,) = [p for p in _children(self.proc.pid) if _kind(p) == kind]
        return pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def restarts(self, kind: str) -> float | None:
        _, _, body = http("GET", self.base + "/metrics", key=None)
        sample = f'persona_process_restarts_total{{process="{kind}"}} '
        found = [line for line in body.decode().splitlines() if line.startswith(sample)]
        return float(found[0].split()[1]) if found else None

    def secret(self) -> str:
        return (self.data_dir / "local-api-key").read_text().split(":")[1]


def _start(tmp: Path, extra: dict[str, str] | None = None) -> Run:
    port, log, data = free_port(), tmp / "run.log", tmp / "data"
    with log.open("w") as out:
        proc = _start_run(data, port, "--no-demo", 2, subprocess.STDOUT, extra, out.fileno())
    return Run(proc, f"http://127.0.0.1:{port}", log, data)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    started = _start(tmp_path_factory.mktemp("crash"))
    try:
        _wait_ready(started.proc, started.base)
        yield started
    finally:
        _stop(started.proc, grace=15)


def _comes_back(run: Run, kind: str) -> int:
    """SIGKILL the child of `kind`; wait for its successor; return the successor's pid."""
    before = run.child(kind)
    os.kill(before, signal.SIGKILL)
    line = f"{NAMES[kind]} (pid {before}) was killed by SIGKILL"
    wait_until(lambda: line in run.output(), timeout=30, what=line)
    after = wait_until(
        lambda: [p for p in _children(run.proc.pid) if _kind(p) == kind and p != before],
        timeout=60,
        what=f"a new {kind}",
    )[0]
    _wait_ready(run.proc, run.base)
    return int(after)


def test_a_killed_worker_comes_back(run: Run) -> None:
    new = _comes_back(run, "worker")
    worker = f"http://127.0.0.1:{_worker_port(new)}"
    wait_until(lambda: http("GET", worker + "/readyz", key=None)[0] == 200, 120, what="worker")
    assert "restarting it in 0.5 s (attempt 1 of 5)" in run.output()
    assert run.restarts("worker") == 1 and run.restarts("reader") == 0
    assert run.proc.poll() is None
    status, _, _ = http("GET", run.base + "/v1/users/x/blocks/recommendations", key=run.secret())
    assert status == 200


def test_a_killed_reader_comes_back(run: Run) -> None:
    old = run.child("reader")
    _comes_back(run, "reader")
    wait_until(lambda: run.restarts("reader") == 1, 30, what="the reader's restart on /metrics")
    assert run.restarts("worker") == 1  # counted by `persona run`, not by the new process
    assert not (run.data_dir / "readers" / f"0-{old}").exists()  # its secondary dir is gone
    assert run.proc.poll() is None


def _folded(run: Run, user: str) -> bool:
    status, _, _ = http("GET", f"{run.base}/v1/users/{user}/profile", key=run.secret())
    return status == 200


def _send(run: Run, user: str) -> None:
    event = {"event_id": f"{user}-1", "type": "product_view", "user_id": user,
             "ts": int(time.time() * 1000), "item_id": "85123A"}  # fmt: skip
    status, _, _ = http("POST", run.base + "/v1/events", [event], key=run.secret())
    assert status == 202


def test_a_killed_broker_restarts_everything_on_the_kept_state(run: Run) -> None:
    _send(run, "before-broker-death")
    wait_until(lambda: _folded(run, "before-broker-death"), 60, what="the first event folded")
    old = {kind: run.child(kind) for kind in ("worker", "reader")}
    _comes_back(run, "broker")
    assert "its topics and consumer offsets were in memory and are gone" in run.output()
    assert all(not _alive(pid) for pid in old.values())  # the worker and reader were restarted
    wait_until(lambda: run.restarts("broker") == 1, 30, what="the broker's restart on /metrics")
    assert "kept state: " in run.output()  # the new broker adopted the data dir's state
    assert _folded(run, "before-broker-death")  # folded before the death: kept
    _send(run, "after-broker-death")
    wait_until(lambda: _folded(run, "after-broker-death"), 60, what="a new event folded")
    assert run.proc.poll() is None


def _processes_of(data_dir: Path) -> list[int]:
    """Live workers and readers of `data_dir` (their command lines name it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and str(data_dir).encode() in argv and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _hold(run: Run) -> socket.socket:
    """Bind the public port without SO_REUSEPORT once `persona run` has started its worker, so
    every reader fails to start on it. Bound before that, `persona run` refuses the taken port
    up front (one message, exit 2) and starts no child at all."""
    wait_until(
        lambda: any(_kind(p) == "worker" for p in _children(run.proc.pid)),
        timeout=120,
        what="the worker child",
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", int(run.base.rsplit(":", 1)[1])))
    return sock


def test_a_reader_that_cannot_start_makes_run_give_up(tmp_path: Path) -> None:
    run = _start(tmp_path, {"PERSONA_MAX_RESTARTS": "2"})
    held = _hold(run)
    try:
        assert run.proc.wait(300) == 1
        out = run.output()
        assert "reader 0 exited with code 1 while starting; restarting it in 0.5 s" in out
        assert "(attempt 2 of 2)" in out
        assert "giving up: reader 0 failed 3 time(s) in a row (exited with code 1 while " in out
        assert "see the output of `persona run`" in out and "persona: stopped" in out
        assert not _processes_of(run.data_dir)
        assert not (run.data_dir / "restarts.json").exists()
    finally:
        held.close()
        _stop(run.proc, grace=15)


def test_a_stop_during_a_back_off_stops_without_a_restart(tmp_path: Path) -> None:
    run = _start(tmp_path, {"PERSONA_MAX_RESTARTS": "10"})
    held = _hold(run)
    try:
        wait_until(lambda: "(attempt 4 of 10)" in run.output(), 300, what="the 4th restart")
        children = _children(run.proc.pid)
        started = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(15) == 0
        assert time.monotonic() - started < 10
        out = run.output()
        assert "(attempt 5 of 10)" not in out and "giving up" not in out
        time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        held.close()
        _stop(run.proc, grace=15)
