"""engine.dedup: the dedup memory's blocks behave as the flat array they replaced."""

from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.dedup import BLOCK, SeenIds


def _filled(n: int, start: int = 0) -> SeenIds:
    seen = SeenIds()
    for i in range(start, start + n):
        seen.add(i, i)
    return seen


def test_membership_covers_frozen_blocks_and_the_tail() -> None:
    seen = _filled(3 * BLOCK + 7)
    assert all(i in seen for i in (0, BLOCK - 1, BLOCK, 2 * BLOCK + 5, 3 * BLOCK + 6))
    assert 3 * BLOCK + 7 not in seen and -1 not in seen
    assert len(seen) == 3 * BLOCK + 7


def test_a_copy_shares_nothing_that_changes() -> None:
    seen = _filled(BLOCK + 3)
    copied = seen.copy()
    copied.add(10**9, 1)
    for i in range(BLOCK):  # fills and freezes a block in the copy only
        copied.add(10**10 + i, 1)
    copied.forget(horizon=10**9, keep=0, cap=10**9)
    assert 10**9 not in seen and len(seen) == BLOCK + 3 and 0 in seen
    assert seen == _filled(BLOCK + 3)


def test_stored_form_is_the_flat_arrays_oldest_first() -> None:
    seen = _filled(2 * BLOCK + 9)
    keys, ats = seen.keys_bytes(), seen.ats_bytes()
    assert array("Q", keys).tolist() == list(range(2 * BLOCK + 9))
    assert array("I", ats).tolist() == list(range(2 * BLOCK + 9))
    again = SeenIds.from_bytes(keys, ats)
    assert again == seen and list(again) == list(seen)


def test_truncated_stored_arrays_load_what_they_hold() -> None:
    seen = SeenIds.from_bytes(array("Q", [5, 6]).tobytes() + b"\x01", array("I", [1]).tobytes())
    assert len(seen) == 1 and 5 in seen and 6 not in seen


def test_forget_drops_whole_old_blocks_and_keeps_the_minimum() -> None:
    seen = _filled(4 * BLOCK)  # times 0 .. 4*BLOCK-1
    seen.forget(horizon=2 * BLOCK, keep=BLOCK, cap=10**9)  # blocks 0, 1 wholly older
    assert len(seen) == 2 * BLOCK and 2 * BLOCK - 1 not in seen and 2 * BLOCK in seen
    seen.forget(horizon=10**9, keep=BLOCK + 1, cap=10**9)  # one more would leave < keep
    assert len(seen) == 2 * BLOCK


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=3 * BLOCK, unique=True))
def test_membership_equals_a_set(keys: list[int]) -> None:
    seen = SeenIds()
    for n, key in enumerate(keys):
        seen.add(key, n)
    assert all(key in seen for key in keys)
    assert list(seen) == keys
    assert SeenIds.from_bytes(seen.keys_bytes(), seen.ats_bytes()) == seen


def test_membership_follows_freezes_and_forgets_after_it_was_asked() -> None:
    """The blocks' set, once built, is rebuilt when a block freezes or old blocks are dropped."""
    seen = SeenIds.from_bytes(_filled(2 * BLOCK).keys_bytes(), _filled(2 * BLOCK).ats_bytes())
    assert 0 in seen and 2 * BLOCK not in seen  # builds the set of the two loaded blocks
    for i in range(2 * BLOCK, 3 * BLOCK):  # the tail fills and freezes into a third block
        seen.add(i, i)
    assert len(seen._tail) == 0 and all(i in seen for i in (0, 2 * BLOCK, 3 * BLOCK - 1))
    seen.forget(horizon=BLOCK, keep=0, cap=10**9)  # block 0 is wholly older
    assert 0 not in seen and BLOCK - 1 not in seen and BLOCK in seen and 3 * BLOCK - 1 in seen
    loaded = SeenIds.from_bytes(seen.keys_bytes(), seen.ats_bytes())  # cached set by content
    assert BLOCK in loaded and 0 not in loaded and 3 * BLOCK not in loaded
