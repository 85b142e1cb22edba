"""`persona run` on its embedded broker for a module's tests: the public port (the readers) and
the worker's private port, both ready."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streams.broker import free_port
from tests.conftest import http, wait_until
from tests.persona.test_run import _children, _kind, _start_run, _stop, _wait_ready, _worker_port


@dataclass
class Run:
    base: str  # the public port: the readers
    worker: str  # the worker's private port
    log: Path  # what `persona run` and its children wrote (stdout and stderr)
    pid: int = 0  # the `persona run` process (to signal it)


@contextmanager
def persona_run(
    tmp: Path,
    readers: int,
    api_keys: str,
    env: dict[str, str] | None = None,
    service: bool = False,
) -> Iterator[Run]:
    """`persona run --no-demo` with `readers` readers, `PERSONA_API_KEYS` = `api_keys` and
    `env`'s settings, its output in tmp/run.log; stopped on exit. `service`: in a session of its
    own, without a controlling terminal (as under a service manager)."""
    port, log = free_port(), tmp / "run.log"
    extra = {"PERSONA_READERS": str(readers), "PERSONA_API_KEYS": api_keys, **(env or {})}
    with log.open("w") as out:
        proc = _start_run(
            tmp / "data", port, "--no-demo", 2, out.fileno(), extra, out.fileno(), service
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(proc, base)
        (pid,) = [p for p in _children(proc.pid) if _kind(p) == "worker"]
        worker = f"http://127.0.0.1:{_worker_port(pid)}"
        wait_until(lambda: http("GET", worker + "/readyz", key=None)[0] == 200, 120, what="worker")
        yield Run(base, worker, log, proc.pid)
    finally:
        _stop(proc, grace=15)
