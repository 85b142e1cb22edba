"""User state and bookkeeping never share a key (issue 14, item 3)."""

from hypothesis import given
from hypothesis import strategies as st

from streams.keys import is_profile_key, user_key, user_of
from streams.positions import is_bookkeeping, position_key

FAUST_OFFSET_KEY = b"__faust\x00offset__"


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
