"""A reader's memos (profiles, partitions, products) stay within their byte bounds when callers
send a flood of distinct ids (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import readers


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
