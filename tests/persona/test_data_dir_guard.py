"""Local conditions `persona run` must refuse clearly, before it starts any child: a data dir in
use by another `persona run` (two engines on one data dir would corrupt it: `--fresh` would
remove the tables under the running worker), an HTTP port another process holds, a data dir on
a read-only or full file system."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.files import LOCK_FD_ENV, DataDirInUse, hold_data_dir, lock_data_dir
from persona.children import RestartStatus
from streams.broker import EmbeddedBroker, free_port
from tests.conftest import ROOT, persona_bare
from tests.persona.test_run import _alive, _running

pytestmark = pytest.mark.integration


def test_the_data_dir_lock_is_exclusive_and_ends_with_its_holder(tmp_path: Path) -> None:
    held = lock_data_dir(tmp_path)
    with pytest.raises(DataDirInUse, match=f"{tmp_path} is in use by another"):
        lock_data_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no lock file: a restore target stays empty
    os.close(held)
    os.close(lock_data_dir(tmp_path))


def test_a_lock_is_inherited_only_as_a_descriptor_of_that_directory(tmp_path: Path) -> None:
    """What `persona run`'s worker does with LOCK_FD_ENV: the descriptor it names counts when it
    is open here, on this directory, with the lock; anything else is no lock (a new one is
    taken, refused here: the directory is held)."""
    data, elsewhere = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    elsewhere.mkdir()
    held = lock_data_dir(data)
    assert hold_data_dir(data, str(held)) == held
    apart = os.open(data, os.O_RDONLY | os.O_DIRECTORY)  # the same directory, not the lock
    other = lock_data_dir(elsewhere)
    for claim in (None, "", "x", "-1", "99999", str(1 << 80), str(apart), str(other)):
        with pytest.raises(DataDirInUse, match=f"{data} is in use"):
            hold_data_dir(data, claim)
    os.close(held)
    mine = hold_data_dir(data, str(other))  # free now: taken, on a descriptor of its own
    assert mine != other and os.fstat(mine).st_ino == data.stat().st_ino
    with pytest.raises(DataDirInUse):
        lock_data_dir(data)
    for fd in (mine, apart, other):
        os.close(fd)


def test_a_child_holds_the_lock_it_inherits_and_not_one_it_is_only_told_of(
    tmp_path: Path,
) -> None:
    held = lock_data_dir(tmp_path)
    code = "import sys; from pathlib import Path; from engine.files import hold_data_dir as h; "
    code += f"h(Path(sys.argv[1]), {str(held)!r})"
    env = {**os.environ, LOCK_FD_ENV: str(held)}
    inherited = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env, pass_fds=(held,),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert inherited.returncode == 0, inherited.stderr
    told = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert told.returncode == 1 and "DataDirInUse" in told.stderr, told.stderr
    os.close(held)


def test_a_second_run_on_a_data_dir_in_use_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with _running(data, tmp_path / "first.log", {}) as first:
        before = sorted(p.name for p in data.iterdir())
        for extra in ([], ["--fresh"]):
            second = persona_bare(
                "run", "--no-demo", "--port", str(free_port()), "--data-dir", str(data), *extra,
                timeout=60,
            )  # fmt: skip
            assert second.returncode == 2, second.stderr
            assert "is in use by another" in second.stderr, second.stderr
            assert "embedded broker" not in second.stdout  # refused before any child
            assert sorted(p.name for p in data.iterdir()) == before  # restarts.json kept too
            assert any((data / "faust").rglob("CURRENT"))  # --fresh removed nothing
        assert first.proc.poll() is None


def test_a_taken_http_port_is_refused_before_any_child(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = persona_bare(
            "run", "--no-demo", "--port", str(port), "--data-dir", str(tmp_path / "d"),
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"127.0.0.1:{port} is in use" in result.stderr
    assert "Traceback" not in result.stderr and "embedded broker" not in result.stdout


def test_an_http_host_that_is_no_address_here_is_refused(tmp_path: Path) -> None:
    result = persona_bare(
        "run", "--no-demo", "--host", "192.0.2.1", "--port", str(free_port()),
        "--data-dir", str(tmp_path / "d"), timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "PERSONA_HTTP_HOST" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def tiny_mount(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """A function mounting a tmpfs with the given options under tmp_path (skipped where mounts
    are not allowed: as a normal user, in most containers)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _run_on(data: Path) -> subprocess.CompletedProcess[str]:
    return persona_bare(
        "run", "--no-demo", "--port", str(free_port()), "--data-dir", str(data), timeout=60
    )


def test_a_read_only_data_dir_is_refused_before_any_child(
    tiny_mount: Callable[[str], Path],
) -> None:
    where = tiny_mount("size=1m,ro")
    for data in (where, where / "data"):  # an existing one (made 0700), a new one (made)
        result = _run_on(data)
        assert result.returncode == 2, result.stderr
        assert f"the data dir {data} cannot be used: Read-only file system" in result.stderr
        assert "Traceback" not in result.stderr and "embedded broker" not in result.stdout


def test_a_full_disk_is_refused_before_any_child(tiny_mount: Callable[[str], Path]) -> None:
    data = tiny_mount("size=256k") / "data"
    result = _run_on(data)
    assert result.returncode == 2, result.stderr
    assert "KiB free" in result.stderr and "Traceback" not in result.stderr
    assert "embedded broker" not in result.stdout


def test_the_restart_status_survives_a_disk_it_cannot_write(tmp_path: Path) -> None:
    status = RestartStatus(tmp_path / "gone" / "restarts.json", ["worker"])  # no such dir
    status.record("worker", 1, restarted=True)  # the supervisor goes on restarting
    status.remove()
    assert status.restarts == {"worker": 1}


def test_a_worker_on_a_taken_port_says_so(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """`persona worker` (scaling out by hand) on a port another process holds."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = persona_bare(
            "worker", "--broker", broker.url, "--port", str(port),
            "--data-dir", str(tmp_path / "d"), env={"PERSONA_CLUSTER_SECRET": "c" * 40},
            timeout=90,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"127.0.0.1:{port} is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_backup_onto_a_full_disk_names_the_backup_directory(
    tiny_mount: Callable[[str], Path], tmp_path: Path
) -> None:
    from persona.backup import BackupError, backup
    from tests.persona.test_backup import _state_dir

    data = _state_dir(tmp_path)
    dest = tiny_mount("size=64k") / "b"
    with pytest.raises(BackupError, match=f"into {dest} .*KiB free: a full disk there"):
        backup(data, dest)
    assert not dest.exists()


def test_a_worker_data_dir_under_a_file_is_one_line(broker: EmbeddedBroker, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = persona_bare(
        "worker", "--broker", broker.url, "--port", str(free_port()),
        "--data-dir", str(tmp_path / "file" / "data"),
        env={"PERSONA_CLUSTER_SECRET": "c" * 40}, timeout=90,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Not a directory" in result.stderr and "Traceback" not in result.stderr


def test_a_killed_run_leaves_no_child_port_or_lock_behind(tmp_path: Path) -> None:
    """SIGKILL of `persona run`: the broker, the worker and the readers die with it (the kernel
    signals them all at once), their ports close, and the data dir's lock, which the worker
    inherited, goes with it: the next run may start."""
    data = tmp_path / "data"
    with _running(data, tmp_path / "run.log", {}) as run:
        broker_port = _broker_port(run.pids["broker"])
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(10)
        deadline = time.monotonic() + 30  # seconds: measured 1-5 s; a reader lingered 40 s
        alive = list(run.pids)
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [kind for kind, pid in run.pids.items() if _alive(pid)]
        assert alive == [], f"still running after their parent was killed: {alive}"
        for port in (broker_port, int(run.base.rsplit(":", 1)[1])):
            with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 1):
                pass
        os.close(lock_data_dir(data))


def _broker_port(pid: int) -> int:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return int(argv[argv.index(b"--listener-url") + 1].rsplit(b":", 1)[1])
