"""An export from a lone worker restarted on its data dir (the user's profile on disk from before
the restart): until the worker's first partition assignment neither the user's data nor its
absence is known there, and the export says so (503, Retry-After, a problem body) while /readyz
is not ready either; once the tables are recovered (/readyz ready) it answers the stored data,
never a 404 saying nothing is stored."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker, free_port
from tests.conftest import http, send_carts, start_worker, wait_until

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def test_a_restarted_lone_workers_export_is_503_until_ready_then_the_stored_data(
    tmp_path: Path,
) -> None:
    user = "restart-export-user"
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        first = start_worker(broker.url, tmp_path / "w")
        try:
            send_carts(broker.url, {user: "A1"}, "x", T0)
            export = f"{first.base}/v1/users/{user}/export"
            wait_until(lambda: http("GET", export)[0] == 200, 120, what="the export")
        finally:
            first.stop()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        seen: list[tuple[int, int, dict[str, str], bytes, int]] = []  # readyz, export, after
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                before = http("GET", f"{base}/readyz", timeout=5)[0]
                status, headers, body = http("GET", f"{base}/v1/users/{user}/export", timeout=5)
                after = http("GET", f"{base}/readyz", timeout=5)[0]
                if status:
                    seen.append((before, status, headers, body, after))
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        worker = start_worker(broker.url, tmp_path / "w", port=port)
        try:
            wait_until(lambda: seen and seen[-1][1] == 200, 120, what="the export answered")
        finally:
            done.set()
            poller.join(30)
            worker.stop()
    for before, status, headers, body, after in seen:
        assert status in (200, 503), (status, body)
        if status == 503:
            problem = json.loads(body)
            assert int(headers["Retry-After"]) >= 1 and problem["status"] == 503, problem
            assert "owner" in problem["detail"], problem
            assert before == 503 or after == 503, (before, after, problem)  # not ready either
        else:
            assert json.loads(body)["stored"]["cart"] == {"A1": 1}, body
    assert seen[-1][1] == 200
