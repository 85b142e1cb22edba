"""`persona run` starts the embedded broker, a worker and the API, and stops it all on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.broker import free_port
from tests.conftest import ROOT, http, wait_until

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended since the listing: it has no children
            continue
        found.update(int(c) for c in text)
    return found


def _kind(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if any(b"tansu" in a for a in argv):
        return "broker"
    return argv[argv.index(b"persona") + 1].decode() if b"persona" in argv else "?"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"


def _start_run(
    data_dir: Path,
    port: int,
    demo_flag: str,
    partitions: int,
    stderr: int,
    extra: dict[str, str] | None = None,
    stdout: int = subprocess.PIPE,
    new_session: bool = False,
) -> subprocess.Popen[str]:
    """`persona run` on its own embedded broker, with none of this environment's PERSONA_*;
    `new_session`: without a controlling terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    env["PERSONA_PARTITIONS"] = str(partitions)
    env.update(extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "persona", "run", demo_flag, "--port", str(port),
         "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, stdout=stdout, stderr=stderr, text=True, start_new_session=new_session,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[str], grace: float = 20.0) -> None:
    """SIGTERM a `persona run`, SIGKILL it if it has not stopped within `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()


def _worker_port(pid: int) -> int:
    """The private port a worker child of `persona run` listens on (from its command line)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return int(argv[argv.index(b"--port") + 1])


@dataclass
class Running:
    proc: subprocess.Popen[str]
    base: str  # the public port (readers)
    worker: str  # the worker's private port
    pids: dict[str, int]  # child kind -> pid


@contextlib.contextmanager
def _running(
    data: Path, log: Path, env: dict[str, str], grace: float = 20.0, flag: str = "--no-demo"
) -> Iterator[Running]:
    """A ready `persona run --no-demo` (or `flag`; 2 partitions, its output in `log`), stopped on
    exit."""
    port = free_port()
    with log.open("w") as out:
        proc = _start_run(data, port, flag, 2, subprocess.STDOUT, env, out.fileno())
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base)
        pids = {_kind(pid): pid for pid in _children(proc.pid)}
        yield Running(proc, base, f"http://127.0.0.1:{_worker_port(pids['worker'])}", pids)
    finally:
        _stop(proc, grace)


def _wait_ready(proc: subprocess.Popen[str], base: str) -> None:
    """Until `persona run` answers /readyz 200 (it must not have exited meanwhile)."""
    wait_until(
        lambda: proc.poll() is not None or http("GET", base + "/readyz", key=None)[0] == 200,
        timeout=120,
        what="/readyz",
    )
    if proc.poll() is not None:  # say why: its output is in a pipe nobody else reads
        output = proc.stdout.read() if proc.stdout else ""
        raise AssertionError(f"persona run exited {proc.returncode}:\n{output[-4000:]}")


def test_run_serves_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = _start_run(tmp_path, port, "--no-demo", partitions=2, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base)
        key_line = (tmp_path / "local-api-key").read_text().strip()
        _, secret, scopes = key_line.split(":", 2)
        assert (
            "content:read" in scopes
            and oct((tmp_path / "local-api-key").stat().st_mode)[-3:] == "600"
        )
        status, _, _ = http("GET", base + "/v1/users/x/blocks/recommendations", key=secret)
        assert status == 200
        children = _children(proc.pid)
        kinds = sorted(_kind(pid) for pid in children)
        assert kinds == ["broker", "reader", "worker"]  # PERSONA_READERS defaults to 1
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        assert time.monotonic() - started < 10
        output = proc.stdout.read() if proc.stdout else ""
        assert secret not in output  # the path is printed, never the secret
        assert str(tmp_path / "local-api-key") in output
        time.sleep(0.2)
        assert not [c for c in children if _alive(c)]
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()


def test_invalid_setting_stops_startup_with_its_name(tmp_path: Path) -> None:
    env = dict(os.environ, PERSONA_HTTP_PORT="eighty")
    result = subprocess.run(
        [sys.executable, "-m", "persona", "run", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PERSONA_HTTP_PORT" in result.stderr


def test_a_worker_port_that_cannot_be_used_stops_startup_with_its_name(tmp_path: Path) -> None:
    """PERSONA_WORKER_PORT taken by another process, or the readers' own port: said before any
    child starts (the worker would fail to listen, restarted until `persona run` gave up)."""
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        for worker_port, said in ((taken.getsockname()[1], "in use"), (port, "readers' port")):
            env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
            env |= {"PERSONA_WORKER_PORT": str(worker_port), "PERSONA_HTTP_PORT": str(port)}
            result = subprocess.run(
                [sys.executable, "-m", "persona", "run", "--data-dir", str(tmp_path / "d")],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 2, result.stderr
            assert "PERSONA_WORKER_PORT" in result.stderr and said in result.stderr


def test_run_demo_prints_working_example_urls(tmp_path: Path) -> None:
    port = free_port()
    proc = _start_run(tmp_path, port, "--demo", partitions=4, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Stop with Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "Persona is running with the demo data" in text, text
        secret = (tmp_path / "local-api-key").read_text().split(":")[1]
        urls = [
            word.strip("'")
            for line in lines
            if line.strip().startswith("curl") and "-X POST" not in line
            for word in line.split()
            if word.strip("'").startswith("http://")
        ]
        personal = [u for u in urls if "someone-new" not in u]
        assert len(personal) >= 4
        for url in personal:
            status, headers, _ = http("GET", url, key=secret)
            assert status == 200, url
            if "/blocks/recommendations" in url:
                assert "X-Persona-Fallback" not in headers, url
        status, headers, _ = http("GET", next(u for u in urls if "someone-new" in u), key=secret)
        assert status == 200 and headers["X-Persona-Fallback"] == "1"
    finally:
        _stop(proc)


def _cpus_of_every_thread(pid: int) -> set[str]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found.add(line.split(":", 1)[1].strip())
    return found


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or not {0, 1} <= os.sched_getaffinity(0),
    reason="needs Linux and CPUs 0 and 1",
)
def test_run_places_the_ingestion_and_the_serving_side_on_their_cpus(tmp_path: Path) -> None:
    port = free_port()
    placement = {"PERSONA_WORKER_CPUS": "0", "PERSONA_READER_CPUS": "1"}
    proc = _start_run(tmp_path, port, "--no-demo", 2, subprocess.STDOUT, placement)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base)
        placed = {_kind(pid): _cpus_of_every_thread(pid) for pid in _children(proc.pid)}
        assert placed == {"broker": {"0"}, "worker": {"0"}, "reader": {"1"}}
    finally:
        _stop(proc, grace=15)
