"""A standalone `persona worker` takes the data dir's lock as `persona run` does: one started on a
data dir another process holds is refused in one line before it writes anything there; one
started by `persona run` inherits the supervisor's lock (the descriptor, named in its
environment) and is not refused by it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.files import LOCK_FD_ENV, DataDirInUse, lock_data_dir
from streams.broker import EmbeddedBroker, free_port
from tests.conftest import persona_bare, start_worker
from tests.persona.test_run import _alive, _running

pytestmark = pytest.mark.integration

REFUSED_WITHIN = 60  # seconds: a refusal takes the imports and the settings (~3 s measured)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker for a worker that runs: on the session broker it would join the session worker's
    consumer group."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as own:
        yield own


def _worker(
    broker: EmbeddedBroker, data: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return persona_bare(
        "worker", "--broker", broker.url, "--port", str(free_port()), "--data-dir", str(data),
        env={"PERSONA_CLUSTER_SECRET": "c" * 40, **(env or {})}, timeout=REFUSED_WITHIN,
    )  # fmt: skip


def _refused(result: subprocess.CompletedProcess[str], data: Path) -> None:
    """Exit 2 with one `persona:` line naming the data dir, and no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("persona:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"persona: the data dir {data} is in use by another"), lines
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("claim", ["none", "not passed"])
def test_a_worker_on_a_locked_data_dir_is_refused_in_one_line(
    broker: EmbeddedBroker, tmp_path: Path, claim: str
) -> None:
    """The lock held by another process (here: this one). `not passed`: the environment names
    the holder's descriptor, as `persona run` does for its worker, but the worker did not
    inherit it: it is not taken on trust."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    held = lock_data_dir(data)
    try:
        env = {LOCK_FD_ENV: str(held)} if claim == "not passed" else {}
        result = _worker(broker, data, env)
        _refused(result, data)
        assert list(data.iterdir()) == []  # nothing written: no state-format.json, no audit.log
    finally:
        os.close(held)


def test_a_worker_holds_the_lock_while_it_runs_and_releases_it_at_exit(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    worker = start_worker(own_broker.url, data)
    try:
        with pytest.raises(DataDirInUse, match=f"the data dir {data} is in use"):
            os.close(lock_data_dir(data))
        _refused(_worker(own_broker, data), data)  # a second standalone worker on it
        assert worker.proc.poll() is None  # the first runs on
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, worker.log.read_text()[-3000:]
    os.close(lock_data_dir(data))  # released with the process


def test_a_worker_beside_a_running_persona_run_is_refused(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The case this lock is for: `persona worker` on the data dir of a running `persona run`,
    whose own worker holds the lock it inherited (the refusal comes before any file is written
    and before the broker is asked)."""
    data = tmp_path / "data"
    with _running(data, tmp_path / "run.log", {}) as run:
        before = sorted(p.name for p in data.iterdir())
        _refused(_worker(broker, data), data)
        assert sorted(p.name for p in data.iterdir()) == before
        assert run.proc.poll() is None and _alive(run.pids["worker"])
