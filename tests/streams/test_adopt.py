"""A worker's kept tables adopted by a new, empty embedded broker (streams/adopt.py): the rows
stay, nothing is recovered twice, and new events fold on top from the new topics' first offset."""

from __future__ import annotations

from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from streams.adopt import forget_broker, partition_dbs
from streams.broker import EmbeddedBroker
from streams.keys import FAUST_OFFSET_KEY
from streams.positions import is_position_key
from tests.conftest import start_worker, wait_until
from tests.streams.carts import CartStream

pytestmark = pytest.mark.integration

STREAM = CartStream("adopt", tuple(f"a{i}" for i in range(10)), items=3)


def _bookkeeping(data_dir: Path) -> int:
    """Faust offsets and input positions left in the worker's partitions."""
    count = 0
    for path in partition_dbs(data_dir):
        db = Rdict(str(path), Options(raw_mode=True))
        count += sum(1 for k, _ in db.items() if k == FAUST_OFFSET_KEY or is_position_key(k))
        db.close()
    return count


def test_a_new_broker_adopts_the_kept_tables(tmp_path: Path) -> None:
    data = tmp_path / "w"
    with EmbeddedBroker(log_file=tmp_path / "first.log") as broker:
        worker = start_worker(broker.url, data)
        try:
            STREAM.send(broker.url, 0, 200)
            wait_until(lambda: STREAM.carts(worker) == STREAM.expected(200), timeout=90)
        finally:
            worker.stop()
    names = {p.name.rsplit("-", 1)[0] for p in partition_dbs(data)}
    assert {"profiles", "clock", "catalog", "popularity"} <= names
    assert _bookkeeping(data) > 0  # offsets and positions of the first broker

    adopted = forget_broker(data)
    assert adopted.partitions == len(partition_dbs(data)) and adopted.removed > 0
    assert _bookkeeping(data) == 0

    with EmbeddedBroker(log_file=tmp_path / "second.log") as broker:
        worker = start_worker(broker.url, data)
        try:
            assert STREAM.carts(worker) == STREAM.expected(200)  # kept, not recovered away
            STREAM.send(broker.url, 200, 120)  # the new topics start at offset 0
            wait_until(lambda: STREAM.carts(worker) == STREAM.expected(320), timeout=90)
        finally:
            worker.stop()
