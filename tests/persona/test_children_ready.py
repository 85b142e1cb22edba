"""`persona run` waits for each child's /readyz: a start whose /readyz keeps saying something new
(a long recovery, the catalog's content index reading rows) is slow, not stuck, and is given
time; one whose /readyz says the same for `ready_timeout` seconds, or that never answers, fails
with what it last said; no start takes longer than READY_CAP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, cast

import pytest

from engine.clock import ManualClock
from persona import children
from persona.children import Child, Children, StartFailed
from persona.restarts import RestartPolicy

Answer = Callable[[float], tuple[int, str]]  # seconds since the first request -> status, detail


class _Readyz:
    """A child's HTTP side: /readyz answers what `answer` says for the time since it began."""

    def __init__(self, answer: Answer) -> None:
        began: list[float] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                began.append(began[0] if began else time.monotonic())
                status, detail = answer(time.monotonic() - began[0])
                body = json.dumps({"status": "starting", "detail": detail}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _wait(proc: subprocess.Popen[bytes], base: str, timeout: float) -> float:
    """Children._wait_ready for a child at `base`; the seconds it took."""
    child = Child(
        "reader", "reader 0", lambda: proc, RestartPolicy(ManualClock()),
        ready_url=base, ready_timeout=timeout, proc=proc,
    )  # fmt: skip
    supervisor = cast(Children, SimpleNamespace(stop=threading.Event()))
    began = time.monotonic()
    Children._wait_ready(supervisor, child)
    return time.monotonic() - began


def test_a_start_that_keeps_moving_on_is_given_time(sleeper: subprocess.Popen[bytes]) -> None:
    """Rows read keep growing for 2.5 s, five times the 0.5 s without change it may take."""

    def answer(t: float) -> tuple[int, str]:
        if t < 2.5:
            return 503, f"indexing the catalog's content: {int(t * 1000)} rows read, 0 applied"
        return 200, "ok"

    readyz = _Readyz(answer)
    try:
        assert _wait(sleeper, readyz.base, 0.5) >= 2.5
    finally:
        readyz.close()


def test_a_start_that_says_the_same_too_long_fails_with_what_it_said(
    sleeper: subprocess.Popen[bytes],
) -> None:
    readyz = _Readyz(lambda t: (503, "tables recovering"))
    try:
        with pytest.raises(StartFailed) as failed:
            _wait(sleeper, readyz.base, 0.5)
    finally:
        readyz.close()
    assert "its /readyz said: tables recovering" in failed.value.what


def test_a_child_that_never_answers_fails_after_the_timeout(
    sleeper: subprocess.Popen[bytes],
) -> None:
    readyz = _Readyz(lambda t: (200, "ok"))
    base = readyz.base
    readyz.close()  # nothing listens there now
    began = time.monotonic()
    with pytest.raises(StartFailed) as failed:
        _wait(sleeper, base, 0.5)
    assert time.monotonic() - began < 5
    assert "never answered" in failed.value.what


def test_no_start_takes_longer_than_the_cap(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(children, "READY_CAP", 1.5)
    readyz = _Readyz(lambda t: (503, f"indexing the catalog's content: {int(t * 1000)} rows"))
    began = time.monotonic()
    try:
        with pytest.raises(StartFailed) as failed:
            _wait(sleeper, readyz.base, 0.5)
    finally:
        readyz.close()
    assert 1.5 <= time.monotonic() - began < 4
    assert "its /readyz said: indexing the catalog's content" in failed.value.what
