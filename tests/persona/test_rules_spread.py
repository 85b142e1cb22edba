"""A rules change reaches every process within 10 s (issue 18 item 3): `persona run` with two
readers on its embedded broker; a PUT /v1/rules made through one process is served by the worker
and by each reader, whichever process took it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from streams.broker import free_port
from tests.conftest import http, wait_until
from tests.persona.test_run import _children, _kind, _start_run, _stop, _wait_ready, _worker_port

pytestmark = pytest.mark.integration
SPREAD = 10.0  # seconds: the bound for every worker and reader
MERCH = "merchandiser-kkkkkkkkkkkkkkkkkk"
KEYS = f"merch:{MERCH}:rules:admin"


@dataclass
class Run:
    base: str  # the public port: the readers
    worker: str  # the worker's private port


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("rules")
    port, log = free_port(), tmp / "run.log"
    extra = {"PERSONA_READERS": "2", "PERSONA_API_KEYS": KEYS}
    with log.open("w") as out:
        proc = _start_run(tmp / "data", port, "--no-demo", 2, out.fileno(), extra, out.fileno())
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(proc, base)
        (pid,) = [p for p in _children(proc.pid) if _kind(p) == "worker"]
        worker = f"http://127.0.0.1:{_worker_port(pid)}"
        wait_until(lambda: http("GET", worker + "/readyz", key=None)[0] == 200, 120, what="worker")
        yield Run(base, worker)
    finally:
        _stop(proc, grace=15)


def version(url: str) -> str | None:
    status, _, body = http("GET", url + "/v1/rules", key=MERCH)
    return json.loads(body)["version"] if status == 200 else None


def everywhere(run: Run, wanted: str) -> bool:
    """The worker, and eight public answers in a row (the two readers share the port)."""
    return version(run.worker) == wanted and all(version(run.base) == wanted for _ in range(8))


def rules(n: int) -> dict[str, object]:
    return {"rules": [{"id": f"r{n}", "action": "exclude", "match": {"item_ids": [f"I{n}"]}}]}


def test_a_change_through_a_reader_or_the_worker_reaches_every_process(run: Run) -> None:
    before = version(run.base)
    assert before is not None
    for n, through in enumerate((run.base, run.worker)):
        started = time.monotonic()
        status, _, body = http("PUT", through + "/v1/rules", rules(n), key=MERCH)
        assert status == 200, body
        new = json.loads(body)["version"]
        assert new == str(int(before) + n + 1)
        wait_until(lambda new=new: everywhere(run, new), SPREAD, what=f"rules version {new}")
        assert time.monotonic() - started < SPREAD
