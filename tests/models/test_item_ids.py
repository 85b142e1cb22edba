"""models.item_ids: a recs model's ids held as one buffer with a hash index behave as the list."""

from __future__ import annotations

import builtins

import pytest

from models.item_ids import ItemIds

IDS = ["sku-1", "b", "", "ünïcode-☃", "sku-10", "x" * 300, "sku-2"]


def test_rows_ids_and_lookups_are_the_lists() -> None:
    ids = ItemIds(IDS)
    assert len(ids) == len(IDS) and list(ids) == IDS
    assert [ids[i] for i in range(len(IDS))] == IDS and ids[-1] == IDS[-1]
    assert ids[1:3] == IDS[1:3]
    for row, item in enumerate(IDS):
        assert ids.get(item) == row and ids.index(item) == row and item in ids
    assert ids.get("sku-3") is None and "sku-3" not in ids and 3 not in ids
    assert ids.rows_of(["sku-2", "nope", "b", ""]) == [6, None, 1, 2]
    assert ids.rows_of([]) == []
    with pytest.raises(ValueError):
        ids.index("nope")
    with pytest.raises(IndexError):
        ids[len(IDS)]


def test_it_equals_the_same_ids_in_any_sequence() -> None:
    ids = ItemIds(IDS)
    assert ids == IDS and IDS == ids and ids == tuple(IDS)  # noqa: SIM300 (both sides)
    assert ids == ItemIds(IDS)
    assert ids != IDS[:-1] and ids != list(reversed(IDS)) and ids != ItemIds(IDS[:-1])
    assert ItemIds.of(ids) is ids and ItemIds([]) == []


def test_colliding_hashes_are_told_apart_by_their_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = ItemIds(["a", "b", "c"])
    # force every id into one hash bucket: lookups must still check the bytes
    ids._hashes[:] = 7
    ids._rows[:] = [2, 0, 1]
    hashed = {b"a": 7, b"b": 7, b"c": 7, b"d": 7}
    real = builtins.hash
    monkeypatch.setattr(builtins, "hash", lambda v: hashed.get(v, real(v)))
    assert [ids.get(x) for x in "abcd"] == [0, 1, 2, None]
    assert ids.rows_of(list("dcba")) == [None, 2, 1, 0]


def test_many_ids_take_far_less_than_a_list_and_a_dict() -> None:
    items = [f"item-{i:07d}" for i in range(200_000)]
    ids = ItemIds(items)
    assert ids.nbytes() < 40 * len(items)  # 12-byte ids: 32 bytes each
    assert ids.get("item-0199999") == 199_999 and ids[123_456] == "item-0123456"
