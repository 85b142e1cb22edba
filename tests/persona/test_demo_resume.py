"""`persona run --demo` stopped part-way through the demo load (issue 16 follow-ups): SIGTERM
while the worker is busy folding stops every process within the contract's 10 s, and the next
`persona run --demo` resumes the load from the kept state: no event is dead-lettered (none as
"late"), every profile ends as a clean fold of the demo file makes it, and the mark is written."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from engine.profile import Profile, apply
from engine.sources import read_events
from persona.demo_load import ORDERS
from streams.adopt import DEMO_MARK, DEMO_PROGRESS, partition_dbs
from streams.broker import free_port
from streams.keys import user_of
from tests.conftest import metric, wait_until
from tests.persona.test_run import _alive, _children, _kind, _start_run, _stop, _worker_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


def _progress(data: Path) -> int:
    try:
        return int(json.loads((data / DEMO_PROGRESS).read_text())["events"])
    except (OSError, ValueError, KeyError):
        return 0


def _start(data: Path, log: Path) -> subprocess.Popen[str]:
    with log.open("w") as out:
        return _start_run(data, free_port(), "--demo", 2, subprocess.STDOUT, None, out.fileno())


def _alive_or_fail(proc: subprocess.Popen[str], log: Path) -> None:
    if proc.poll() is not None:
        raise AssertionError(f"persona run exited {proc.returncode}:\n{log.read_text()[-4000:]}")


def _stop_timed(proc: subprocess.Popen[str]) -> float:
    """SIGTERM `persona run`; seconds until it and every child of it are gone."""
    children = _children(proc.pid)
    assert sorted(_kind(c) for c in children) == ["broker", "reader", "worker"]
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_until(
        lambda: proc.poll() is not None and not any(_alive(c) for c in children),
        timeout=60,
        interval=0.05,
        what="persona run and its children gone",
    )
    return time.monotonic() - started


def _summary(p: Profile) -> tuple[Any, ...]:
    return (p.version, p.counts, p.orders, round(p.monetary, 2), p.first_seen, p.last_seen, p.cart)


def _stored_profiles(data: Path) -> dict[str, tuple[Any, ...]]:
    out = {}
    for path in partition_dbs(data):
        if path.name.startswith("profiles-"):
            db = Rdict(str(path), Options(raw_mode=True))
            for key, value in db.items():
                user = user_of(key)
                if user is not None:
                    out[user] = _summary(Profile.unpack(value))
            db.close()
    return out


def _clean_fold() -> dict[str, tuple[Any, ...]]:
    """Every demo customer's profile as one uninterrupted fold of the demo file makes it."""
    fold: dict[str, Profile] = {}
    for event in read_events(ORDERS):
        fold[event.user_id] = apply(fold.get(event.user_id), event, None)
    return {user: _summary(p) for user, p in fold.items()}


def test_a_demo_load_stopped_by_sigterm_stops_within_10_s_and_resumes_without_late_events(
    tmp_path: Path,
) -> None:
    data, first_log, second_log = tmp_path / "data", tmp_path / "first.log", tmp_path / "second.log"
    proc = _start(data, first_log)
    try:
        # a first segment is folded: the load is under way, the worker busy with the next ones
        wait_until(lambda: proc.poll() is not None or _progress(data) > 0, 600, 0.1)
        _alive_or_fail(proc, first_log)
        took = _stop_timed(proc)
    finally:
        _stop(proc)
    assert took <= 10, f"stopping took {took:.1f} s:\n{first_log.read_text()[-3000:]}"
    stopped_at = _progress(data)
    total = sum(1 for _ in read_events(ORDERS))
    assert 0 < stopped_at < total and not (data / DEMO_MARK).exists()

    proc = _start(data, second_log)
    try:
        wait_until(
            lambda: proc.poll() is not None or "Stop with Ctrl-C" in second_log.read_text(),
            900,
            what="the resumed demo load",
        )
        _alive_or_fail(proc, second_log)
        text = second_log.read_text()
        assert f"resuming the demo load at event {stopped_at:,}" in text, text[-3000:]
        worker = next(c for c in _children(proc.pid) if _kind(c) == "worker")
        base = f"http://127.0.0.1:{_worker_port(worker)}"
        assert metric(base, "persona_events_processed_total") > 0
        assert metric(base, "persona_events_late_total") == 0
        assert metric(base, "persona_events_dead_lettered_total") == 0
        assert (data / DEMO_MARK).exists() and not (data / DEMO_PROGRESS).exists()
    finally:
        _stop(proc)
    assert _stored_profiles(data) == _clean_fold()
