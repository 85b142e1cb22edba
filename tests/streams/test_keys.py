"""User state and bookkeeping never share a key (issue 14, item 3)."""

from hypothesis import given
from hypothesis import strategies as st

from streams.keys import (
    FAUST_OFFSET_KEY,
    LAYOUT,
    LAYOUT_KEY,
    alias_of,
    fence_of,
    is_profile_key,
    layout_moves,
    merged_of,
    user_key,
    user_of,
)
from streams.positions import is_bookkeeping, position_key


@given(st.text(max_size=200))
def test_no_user_id_names_a_bookkeeping_row(user_id: str):
    key = user_key(user_id)
    assert is_profile_key(key) and not is_bookkeeping(key)
    assert key != FAUST_OFFSET_KEY
    assert all(key != position_key(t) for t in ("clickstream", "cart", "social"))
    assert user_of(key) == user_id


def test_bookkeeping_rows_are_not_users():
    assert user_of(FAUST_OFFSET_KEY) is None
    assert user_of(position_key("cart")) is None
    assert user_of(user_key("__faust\x00offset__")) == "__faust\x00offset__"


def test_layout_moves_every_profile_row_and_marks_the_partition():
    rows = [
        (FAUST_OFFSET_KEY, b"17"),
        (position_key("cart"), b"42"),
        (b"alice", b"A"),
        (b"__faust-looking-user", b"B"),
        (b"u:starts-like-a-prefix", b"C"),
    ]
    moves = layout_moves(rows)
    assert moves == [
        (b"u:alice", b"A"),
        (b"alice", None),
        (b"u:__faust-looking-user", b"B"),
        (b"__faust-looking-user", None),
        (b"u:u:starts-like-a-prefix", b"C"),
        (b"u:starts-like-a-prefix", None),
        (LAYOUT_KEY, LAYOUT),
    ]
    assert layout_moves([]) == [(LAYOUT_KEY, LAYOUT)]
    assert is_bookkeeping(LAYOUT_KEY) and user_of(LAYOUT_KEY) is None


@given(st.text(max_size=200), st.text(max_size=200))
def test_identity_rows_are_neither_profiles_nor_bookkeeping(user_id: str, other: str):
    """The alias and merged-ids rows (streams/identity.py) of one id never name a profile, a
    fence, a bookkeeping row or the rows of another id."""
    rows = {alias_of(user_key(user_id)), merged_of(user_key(user_id)), fence_of(user_key(user_id))}
    assert len(rows) == 3
    assert not any(is_profile_key(k) or is_bookkeeping(k) or user_of(k) for k in rows)
    if other != user_id:
        assert alias_of(user_key(other)) not in rows and merged_of(user_key(other)) not in rows
