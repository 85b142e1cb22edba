"""The embedded broker on a port another process holds: start() said it had started (the port
answered: the other process), then the broker died with `Address in use` in its log and nothing
else said why (`persona run` restarts it on the same port after a death). Now start() refuses
it naming the address."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streams.broker import BrokerError, EmbeddedBroker


def test_a_port_held_by_another_process_is_refused_naming_it(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(port=port, log_file=tmp_path / "broker.log")
        with pytest.raises(BrokerError, match=rf"127\.0\.0\.1:{port}\b.*in use"):
            broker.start()
        assert broker.proc is None
