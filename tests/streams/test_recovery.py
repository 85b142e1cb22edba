"""Tables survive a worker restart on the embedded broker: from the local RocksDB state plus the
changelog, and from the changelog alone on an empty data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from tests.conftest import start_worker, wait_until
from tests.streams.carts import CartStream

pytestmark = pytest.mark.integration

STREAM = CartStream("rec", tuple(f"r{i}" for i in range(12)), items=5)
send, expected, carts = STREAM.send, STREAM.expected, STREAM.carts


def test_state_recovers_after_restart_and_on_an_empty_data_dir(tmp_path: Path) -> None:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        first = start_worker(broker.url, tmp_path / "a")
        try:
            send(broker.url, 0, 600)
            wait_until(lambda: carts(first) == expected(600), timeout=60, what="600 events")
        finally:
            first.stop()

        again = start_worker(broker.url, tmp_path / "a")  # same RocksDB dir
        try:
            assert carts(again) == expected(600)
            send(broker.url, 0, 900)  # 600 repeats (ignored) and 300 new events
            wait_until(lambda: carts(again) == expected(900), timeout=60, what="900 events")
        finally:
            again.stop()

        fresh = start_worker(broker.url, tmp_path / "b")  # only the changelog to go on
        try:
            assert carts(fresh) == expected(900)
        finally:
            fresh.stop()
