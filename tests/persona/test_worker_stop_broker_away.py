"""A worker whose broker has gone away exits on SIGTERM within PERSONA_STOP_TIMEOUT, its tables
intact. Found live: with the broker SIGKILLed while events flowed, the worker's stop waited for
ever on the producer's flush (`[^-App]: Flush producer buffer...`) or, once its loop had closed,
on Faust's consumer thread retrying the broker; a supervisor had to SIGKILL it."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from rocksdict import Options, Rdict

from streams.adopt import partition_dbs
from streams.broker import EmbeddedBroker
from tests.conftest import http, start_worker, wait_until

STOP_TIMEOUT = 10  # PERSONA_STOP_TIMEOUT for this worker (the default is 30 s)


def _events(batch: int, distinct: int = 40) -> list[dict[str, object]]:
    now = int(time.time() * 1000)
    users = [f"stop-u{i % distinct}" for i in range(50)]
    return [
        {"event_id": f"stop-{batch}-{i}", "type": "product_view", "user_id": user, "ts": now,
         "item_id": f"i{i % 37}"}
        for i, user in enumerate(users)
    ]  # fmt: skip


def _profile_keys(data: Path) -> list[bytes]:
    keys: list[bytes] = []
    for path in partition_dbs(data):
        if path.name.startswith("profiles-"):
            db = Rdict(str(path), Options(raw_mode=True))
            keys += [k for k in db.keys(from_key=b"") if isinstance(k, bytes)]
            db.close()
    return keys


def test_sigterm_ends_a_worker_whose_broker_is_gone(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log").start()
    worker = None
    stop = threading.Event()
    try:
        worker = start_worker(
            broker.url, tmp_path / "w", {"PERSONA_STOP_TIMEOUT": str(STOP_TIMEOUT)}
        )
        base = worker.base
        status, _, _ = http("POST", base + "/v1/events", _events(0))
        assert status == 202
        wait_until(
            lambda: http("GET", base + "/v1/users/stop-u1/profile")[0] == 200,
            timeout=120,
            what="the first events folded",
        )

        def pump() -> None:  # events in flight when the broker dies, and after
            n = 1
            while not stop.is_set():
                http("POST", base + "/v1/events", _events(n), timeout=3)
                n += 1
                time.sleep(0.02)

        threading.Thread(target=pump, daemon=True).start()
        time.sleep(3)
        assert broker.proc is not None
        broker.proc.kill()  # SIGKILL: the broker is gone, the worker keeps retrying
        broker.proc.wait()
        size = worker.log.stat().st_size
        wait_until(  # the consumer retries the broker
            lambda: b"Unable connect to node" in worker.log.read_bytes()[size:],
            timeout=120,
            what="the worker retrying the broker",
        )
        time.sleep(30)  # as found live: the worker had been retrying a while
        stop.set()
        assert worker.proc.poll() is None
        worker.proc.send_signal(signal.SIGTERM)
        # the bound plus a generous margin for a loaded machine (unbounded before: >14 minutes)
        wait_until(
            lambda: worker.proc.poll() is not None,
            timeout=STOP_TIMEOUT + 90,
            interval=0.5,
            what="the worker's exit after SIGTERM",
        )
        said = worker.log.read_text(errors="replace")
        if "did not stop within" in said:  # the bound ended it: the line names what was left
            assert "threads left" in said, said[-3000:]
        # the tables are closed or their WAL intact: they open, with the users folded
        keys = _profile_keys(tmp_path / "w")
        assert any(b"stop-u1" in k for k in keys), keys[:20]
    finally:
        stop.set()
        if worker is not None:
            worker.stop()
        broker.stop()
