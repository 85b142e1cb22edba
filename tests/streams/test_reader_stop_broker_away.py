"""A reader whose broker has gone away stops cleanly on SIGTERM: exit code 0, no traceback, every
service stopped. Found checking the worker's unbounded stop: aiokafka's consumer `stop()` raised
CancelledError (its fetcher awaits the fetch tasks it has just cancelled, retrying the broker),
which the reader's `suppress(Exception)` let through: the reader skipped its state's stop and
exited 1 with a traceback."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker, free_port
from tests.conftest import http, start_worker, wait_until
from tests.streams.test_reader_process import start_reader

pytestmark = pytest.mark.integration


def _events(batch: int) -> list[dict[str, object]]:
    now = int(time.time() * 1000)
    return [
        {"event_id": f"rstop-{batch}-{i}", "type": "product_view", "user_id": f"rstop-u{i}",
         "ts": now, "item_id": "i1"}
        for i in range(50)
    ]  # fmt: skip


def test_sigterm_stops_a_reader_whose_broker_is_gone(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log").start()
    worker = None
    reader = None
    stop = threading.Event()
    try:
        worker = start_worker(broker.url, tmp_path / "w")
        port = free_port()
        reader = start_reader(worker, port, 0)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http("GET", base + "/readyz")[0] == 200, timeout=120, what="reader")

        def pump() -> None:  # the reader produces events when the broker dies, and after
            n = 0
            while not stop.is_set():
                http("POST", base + "/v1/events", _events(n), timeout=3)
                n += 1
                time.sleep(0.02)

        threading.Thread(target=pump, daemon=True).start()
        time.sleep(3)
        assert broker.proc is not None
        broker.proc.kill()
        broker.proc.wait()
        log = worker.data_dir / "reader-0.log"
        size = log.stat().st_size
        wait_until(  # the reader's consumers retry the broker
            lambda: b"Unable connect to node" in log.read_bytes()[size:],
            timeout=120,
            what="the reader retrying the broker",
        )
        time.sleep(10)
        stop.set()
        size = log.stat().st_size
        reader.send_signal(signal.SIGTERM)
        wait_until(lambda: reader.poll() is not None, timeout=120, what="the reader's exit")
        said = log.read_bytes()[size:].decode(errors="replace")
        uncaught = [line for line in said.splitlines() if line.startswith("Traceback")]
        assert not uncaught, said[-4000:]
        assert reader.returncode == 0, said[-4000:]
    finally:
        stop.set()
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait()
        if worker is not None:
            worker.stop()
        broker.stop()
