"""benchmarks.ingest: a measured worker that does not stop on SIGTERM fails the run, killed, with
its log kept (the benchmark's data directory is removed afterwards)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ingest, results_file

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_worker_that_ignores_sigterm_is_killed_and_its_log_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results_file, "RESULTS", tmp_path / "results")
    log = tmp_path / "worker.log"
    log.write_text("the worker's last words\n")
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    with pytest.raises(RuntimeError, match=r"did not stop within 0\.5 s of SIGTERM") as failed:
        ingest.stop_worker(proc, log, wait=0.5)
    assert proc.returncode is not None  # killed
    kept = list((tmp_path / "results").glob("worker-stop-*.log"))
    assert len(kept) == 1 and kept[0].read_text() == "the worker's last words\n"
    assert str(kept[0]) in str(failed.value)


def test_a_worker_that_stops_is_left_alone(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    ingest.stop_worker(proc, tmp_path / "no.log", wait=30)
    assert proc.returncode is not None
