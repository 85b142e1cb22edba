"""Profiles stored by a version before key spaces (under the plain user id) are moved under the
`u:` key space when a worker of this version starts on them, locally and in the changelog; the data
dir of such a release (no state-format.json) is taken over and its format recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from rocksdict import Options, Rdict, WriteBatch

from persona.state_dir import FORMAT_FILE, current, read_format
from streams.broker import EmbeddedBroker
from streams.keys import LAYOUT_KEY, USER_PREFIX
from tests.conftest import start_worker, wait_until
from tests.streams.carts import CartStream

pytestmark = pytest.mark.integration

STREAM = CartStream("lay", tuple(f"l{i}" for i in range(12)), items=4)


def _as_an_earlier_version_stored_it(data_dir: Path) -> int:
    """Rewrite every profile row of the worker's RocksDB under the plain user id, and drop the
    layout mark: what an earlier version left. Returns how many rows moved."""
    moved = 0
    for path in sorted((data_dir / "faust").glob("**/profiles-*.db")):
        db = Rdict(str(path), Options(raw_mode=True))
        batch = WriteBatch(raw_mode=True)
        for key, value in db.items():
            if key.startswith(USER_PREFIX):
                batch.put(key[len(USER_PREFIX) :], value)
                batch.delete(key)
                moved += 1
        batch.delete(LAYOUT_KEY)
        db.write(batch)
        db.close()
    return moved


def _plain_user_rows(data_dir: Path) -> list[bytes]:
    rows = []
    for path in sorted((data_dir / "faust").glob("**/profiles-*.db")):
        db = Rdict(str(path), Options(raw_mode=True))
        rows += [k for k, _ in db.items() if k.decode(errors="replace") in STREAM.users]
        db.close()
    return rows


def test_profiles_of_an_earlier_layout_are_moved_and_reach_the_changelog(tmp_path: Path) -> None:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        first = start_worker(broker.url, tmp_path / "a")
        try:
            STREAM.send(broker.url, 0, 240)
            wait_until(lambda: STREAM.carts(first) == STREAM.expected(240), timeout=60)
        finally:
            first.stop()
        assert _as_an_earlier_version_stored_it(tmp_path / "a") == len(STREAM.users)
        (tmp_path / "a" / FORMAT_FILE).unlink()  # releases before state formats wrote none

        again = start_worker(broker.url, tmp_path / "a")
        try:
            assert STREAM.carts(again) == STREAM.expected(240)
            STREAM.send(broker.url, 0, 360)  # 240 repeats and 120 new events on top
            wait_until(lambda: STREAM.carts(again) == STREAM.expected(360), timeout=60)
            assert "under the u: key space" in again.log.read_text()
            assert f"no {FORMAT_FILE}" in again.log.read_text()
            assert read_format(tmp_path / "a") == current()
        finally:
            again.stop()
        assert _plain_user_rows(tmp_path / "a") == []

        fresh = start_worker(broker.url, tmp_path / "b")  # the changelog alone
        try:
            assert STREAM.carts(fresh) == STREAM.expected(360)
        finally:
            fresh.stop()
        assert _plain_user_rows(tmp_path / "b") == []
