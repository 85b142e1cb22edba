"""Property-based fuzzing of decode -> validate -> fold (issue 14, item 8).

Whatever bytes or values arrive, `parse` either returns a valid Event or raises InvalidEvent with a
reason, and a valid event folds into a profile that packs within the store's bound and reads back
unchanged. Nothing else may come out: any other exception would stop the worker.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.events import EVENT_TYPES, Event, InvalidEvent, parse
from engine.profile import Profile, apply
from streams.app import MAX_PROFILE_BYTES
from streams.keys import user_key, user_of

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)
msgpack_scalars = (
    scalars.filter(lambda v: not isinstance(v, int) or -(2**63) <= v < 2**64)
    | st.binary(max_size=20)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-5, 5)), inner, max_size=6)
    ),
    max_leaves=30,
)
ids = st.text(min_size=0, max_size=140) | st.sampled_from(["u1", "__faust\x00offset__", "a\ud800"])
timestamps = (
    st.integers(min_value=-(2**65), max_value=2**65)
    | st.sampled_from([1_700_000_000_000, 4_070_908_800_000, "2023-11-14T22:13:20Z"])
    | st.text(max_size=40)
    | st.floats()
)


@st.composite
def event_like(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> dict[Any, Any]:
    """Mostly well-formed events with one or more fields drawn from the hostile space."""
    event: dict[Any, Any] = {
        "event_id": draw(ids),
        "type": draw(st.sampled_from(sorted(EVENT_TYPES)) | st.text(max_size=10)),
        "user_id": draw(ids),
        "ts": draw(timestamps),
    }
    optional = {
        "item_id": ids,
        "quantity": st.integers(min_value=-3, max_value=2**70) | values,
        "price": st.floats() | st.integers(min_value=-(2**70), max_value=2**70) | values,
        "currency": st.sampled_from(["EUR", "GBP", "eur", "EURO"]) | values,
        "session_id": ids,
        "source": st.text(max_size=70),
        "props": st.dictionaries(st.text(max_size=70), values, max_size=5) | values,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            event[name] = draw(strategy)
    return event


def packed(value: Any) -> bytes:
    """msgpack bytes of `value`; values no msgpack producer could send are not drawn."""
    try:
        return bytes(msgpack.packb(value, use_bin_type=True))
    except (OverflowError, UnicodeEncodeError, ValueError, TypeError):
        assume(False)
        raise


def check(raw: bytes, previous: Profile | None = None) -> None:
    try:
        event = parse(raw)
    except InvalidEvent as exc:
        assert exc.reason  # a dead letter carries a reason
        return
    assert isinstance(event, Event)
    assert user_of(user_key(event.user_id)) == event.user_id
    profile = apply(previous, event)
    packed = profile.pack()
    assert len(packed) <= MAX_PROFILE_BYTES
    assert Profile.unpack(packed) == profile
    json.dumps(event.to_dict())  # every accepted event can travel as JSON again


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    check(json.dumps(value).encode())


@FUZZ
@given(msgpack_values)
def test_arbitrary_msgpack_values(value: Any) -> None:
    check(packed(value))


@FUZZ
@given(event_like(json_values))
def test_event_shaped_json(value: dict[Any, Any]) -> None:
    check(json.dumps(value).encode())


@FUZZ
@given(event_like(msgpack_values))
def test_event_shaped_msgpack(value: dict[Any, Any]) -> None:
    check(packed(value))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_like(json_values), min_size=1, max_size=40))
def test_sequences_fold_into_one_bounded_profile(values: list[dict[Any, Any]]) -> None:
    profile: Profile | None = None
    for value in values:
        value["user_id"] = "u1"
        try:
            event = parse(json.dumps(value).encode())
        except InvalidEvent:
            continue
        profile = apply(profile, event)
        assert len(profile.pack()) <= MAX_PROFILE_BYTES
