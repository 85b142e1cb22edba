"""TableWriter (streams/changelog.py): the partition's RocksDB, the changelog records in order, the
persisted offset once acknowledged, and a failed send stopping the next write. The broker side is
covered end to end by tests/streams/test_crash_recovery.py and test_recovery.py; here the changelog
is a recorder of Faust's `send_soon` whose acknowledgements the test releases."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rocksdict import Rdict

from streams.changelog import TableWriter


class _Changelog:
    """Records `send_soon` calls; the test acknowledges them (offsets in sending order)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []
        self.futures: list[asyncio.Future[Any]] = []

    def get_topic_name(self) -> str:
        return "persona-profiles-changelog"

    def send_soon(self, *, key: bytes, value: bytes | None, partition: int, **kw: Any) -> Any:
        assert kw["key_serializer"] == kw["value_serializer"] == "raw"
        self.sent.append((self.get_topic_name(), key, value, partition))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    def ack_all(self) -> None:
        for offset, (fut, (topic, _, _, partition)) in enumerate(
            zip(self.futures, self.sent, strict=True)
        ):
            if not fut.done():
                fut.set_result(SimpleNamespace(topic=topic, partition=partition, offset=offset))


class _Store:
    offset_key = b"__faust\x00offset__"

    def __init__(self, root: Path) -> None:
        self.dbs = {p: Rdict(str(root / f"p{p}")) for p in range(2)}
        self.persisted: list[tuple[int, int]] = []

    def _db_for_partition(self, partition: int) -> Rdict:
        return self.dbs[partition]

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted.append((tp.partition, offset))
        self.dbs[tp.partition].put(self.offset_key, str(offset).encode())


def _table(tmp_path: Path) -> tuple[Any, _Changelog, _Store]:
    changelog = _Changelog()
    store = _Store(tmp_path)
    return SimpleNamespace(data=store, changelog_topic=changelog), changelog, store


def test_writes_go_to_the_partition_db_and_the_changelog_in_order(tmp_path: Path) -> None:
    table, changelog, store = _table(tmp_path)
    writer = TableWriter(table)

    async def go() -> None:
        writer.write(1, [(b"u1", b"v1"), (b"u2", b"v2")])
        writer.write(0, [(b"u3", b"v3")])
        writer.write(1, [(b"u1", None)])  # erased: a tombstone
        changelog.ack_all()
        await asyncio.sleep(0)  # the acknowledgements' callbacks
        await asyncio.sleep(0)  # the one offset write they scheduled

    asyncio.run(go())
    assert store.dbs[1].get(b"u1") is None
    assert store.dbs[1].get(b"u2") == b"v2"
    assert store.dbs[0].get(b"u3") == b"v3"
    assert store.dbs[0].get(b"u1") is None
    assert changelog.sent == [
        ("persona-profiles-changelog", b"u1", b"v1", 1),
        ("persona-profiles-changelog", b"u2", b"v2", 1),
        ("persona-profiles-changelog", b"u3", b"v3", 0),
        ("persona-profiles-changelog", b"u1", None, 1),
    ]
    # the highest acknowledged offset of each partition, once for the whole acknowledgement
    assert sorted(store.persisted) == [(0, 2), (1, 3)]


def test_no_offset_is_persisted_before_the_broker_acknowledges(tmp_path: Path) -> None:
    table, changelog, store = _table(tmp_path)
    writer = TableWriter(table)

    async def go() -> None:
        writer.write(0, [(b"u", b"v")])
        await asyncio.sleep(0.01)
        assert store.persisted == []
        changelog.ack_all()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(go())
    assert store.persisted == [(0, 0)]


def test_a_failed_changelog_send_stops_the_next_write(tmp_path: Path) -> None:
    table, changelog, store = _table(tmp_path)
    writer = TableWriter(table)

    async def go() -> None:
        writer.write(0, [(b"u", b"v1")])
        changelog.futures[0].set_exception(RuntimeError("broker gone"))
        await asyncio.sleep(0)
        writer.write(0, [(b"u", b"v2")])

    with pytest.raises(RuntimeError, match="broker gone"):
        asyncio.run(go())
    assert store.dbs[0].get(b"u") == b"v1"  # the second write did not happen
