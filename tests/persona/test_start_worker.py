"""tests/conftest.py `start_worker`, the helper every integration test's worker comes from: a port
free_port found free can be taken by another process in the seconds before the worker binds it
(the worker then exits saying so), and one such race failed a whole run."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.conftest
from streams.broker import EmbeddedBroker, free_port
from tests.conftest import http, start_worker

pytestmark = pytest.mark.integration


def test_a_worker_whose_free_port_was_taken_meanwhile_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken, EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        lost = taken.getsockname()[1]
        ports: Iterator[int] = iter([lost])  # the race: the first port found is taken by then
        monkeypatch.setattr(tests.conftest, "free_port", lambda: next(ports, None) or free_port())
        worker = start_worker(broker.url, tmp_path / "w")
        try:
            assert not worker.base.endswith(f":{lost}")
            assert http("GET", worker.base + "/readyz", key=None)[0] == 200
            assert f"127.0.0.1:{lost} is in use by another process" in worker.log.read_text()
        finally:
            worker.stop()


def test_a_worker_on_a_port_the_caller_chose_is_not_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that chose the port (to poll it before the worker is ready) gets that port or
    the worker's own words."""
    with socket.socket() as taken, EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AssertionError, match=f"(?s)worker exited 2:.*:{port} is in use"):
            start_worker(broker.url, tmp_path / "w", port=port)
