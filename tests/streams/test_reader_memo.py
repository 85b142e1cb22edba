"""A reader's memos (profiles, partitions, products) stay within their byte bounds when callers
send a flood of distinct ids (issue 14)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from engine.memo import ENTRY_OVERHEAD
from engine.profile import Profile
from streams import readers
from streams.keys import user_key
from tests.streams.grown import grown


def test_a_flood_of_unknown_ids_stays_within_the_reader_memos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "PROFILE_MEMO_BYTES", 1 << 20)
    monkeypatch.setattr(readers, "PARTITION_MEMO_BYTES", 1 << 20)
    monkeypatch.setattr(readers, "PRODUCT_MEMO_BYTES", 1 << 20)
    state = readers.SecondaryState(tmp_path, 4, tmp_path / "secondary")
    for n in range(20_000):
        assert state.profile(f"{n:x}" + "ü" * 120) is None
        assert state.product(f"item-{n:0100d}") is None
    for memo in (state._memo, state._partition_memo, state._products):
        assert 0 < memo.bytes <= 1 << 20
        assert len(memo) < 20_000


@pytest.mark.parametrize("events", [1, 3, 10, 30, 100, 300])
def test_a_profile_memo_entry_counts_at_least_what_it_keeps(events: int) -> None:
    """The reader's profile memo bound (128 MiB) is real memory: an entry keeps the user id, the
    stored row and the decoded profile, and their objects (tracemalloc) never take more than
    `memo_cost` accounts. (At 6x the row, as before, every case here failed.)"""
    stored = {f"user{i:05d}": grown(f"user{i:05d}", events).pack() for i in range(200)}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        entries = [
            ("".join(user), (7, bytes(bytearray(raw)), Profile.unpack(raw)))
            for user, raw in stored.items()
        ]
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(entries) == len(stored)
    assert taken <= sum(readers.memo_cost(user, raw) for user, raw in stored.items())


def test_the_reader_accounts_each_profile_it_memoizes(tmp_path: Path) -> None:
    """`SecondaryState.profile` puts what `memo_cost` says into its memo (read from a
    worker's table as a secondary), and an unknown id counts only its id."""
    directory = readers.table_dir(tmp_path)
    directory.mkdir(parents=True)
    dbs = []
    for name in readers.TABLES:
        for p in range(4):
            options = Options(raw_mode=True)
            options.create_if_missing(True)
            db = Rdict(str(directory / f"{name}-{p}.db"), options)
            db[readers.OFFSET_KEY] = b"1"
            dbs.append(db)
    state = readers.SecondaryState(tmp_path, 4, tmp_path / "secondary")
    raw = grown("ann", 30).pack()
    by_name = dict(zip([(n, p) for n in readers.TABLES for p in range(4)], dbs, strict=True))
    by_name[("profiles", state.partition_of("ann"))][user_key("ann")] = raw
    for db in dbs:
        db.close()
    state.refresh()
    assert state.profile("ann") is not None
    assert state._memo.bytes == readers.memo_cost("ann", raw) + ENTRY_OVERHEAD
    assert state.profile("nobody") is None
    assert state._memo.bytes == (
        readers.memo_cost("ann", raw) + readers.memo_cost("nobody", None) + 2 * ENTRY_OVERHEAD
    )
