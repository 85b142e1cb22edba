"""Hostile events: each is refused with a reason (InvalidEvent), never another exception, and
whatever is accepted is bounded (issue 14, item 3)."""

import io
import json

import msgpack
import pytest

from engine.catalog import InvalidProduct, parse_product
from engine.catalog_formats import read_products
from engine.events import MAX_EVENT_BYTES, MAX_QUANTITY, InvalidEvent, parse, parse_ts, validate
from engine.profile import CART_LINES, CART_QUANTITY, Profile, apply

BASE = {"event_id": "e1", "type": "add_to_cart", "user_id": "u1", "ts": 1700000000000}


def event(**change: object) -> dict[str, object]:
    return {**BASE, "item_id": "i1", **change}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "larger than"),
        (b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),
        (b'{"quantity": ' + b"9" * 5000 + b"}", "invalid JSON"),
        (b"\xc1\xff\xfe", "neither JSON nor msgpack"),
        (b'{"user_id": "\xff\xfe"}', "invalid JSON"),
        (b"\x91" * 5000 + b"\xc0", "neither JSON nor msgpack"),
        (msgpack.packb({**BASE, "ts": 2**63}), "outside 2000..2100"),
        (msgpack.packb(event(quantity=2**63)), "quantity"),
        (json.dumps(event(quantity=10**30)).encode(), "quantity"),
        (json.dumps(event(price=10**400)).encode(), "price"),
        (json.dumps(event(price=1e300)).encode(), "price"),
        (json.dumps(event(ts="9" * 100_0)).encode(), "RFC 3339"),
        (json.dumps(event(type=["add_to_cart"])).encode(), "type must be a string"),
        (json.dumps(event(type={"a": 1})).encode(), "type must be a string"),
    ],
)
def test_undecodable_or_unbounded_values_are_refused_with_a_reason(raw: bytes, reason: str):
    with pytest.raises(InvalidEvent, match=reason):
        parse(raw)
    assert len(raw) <= MAX_EVENT_BYTES or "larger" in reason


@pytest.mark.parametrize("field", ["user_id", "event_id", "item_id", "session_id"])
@pytest.mark.parametrize("bad", ["__faust\u0000offset__", "a\nb", "a\x7fb", "a\x85b", "a\ud800b"])
def test_ids_refuse_control_characters_and_lone_surrogates(field: str, bad: str):
    with pytest.raises(InvalidEvent, match=field):
        validate(event(**{field: bad}))


def test_lone_surrogates_from_json_escapes_are_refused_not_crashed_on():
    raw = b'{"event_id":"e1","type":"page_view","user_id":"\\udc80","ts":1700000000000}'
    with pytest.raises(InvalidEvent, match="surrogate"):
        parse(raw)


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        ({"a": {"b": {"c": {"d": 1}}}}, "nested deeper"),
        ({"q": "x" * 2001}, "longer than"),
        ({f"k{i}": i for i in range(65)}, "more than 64"),
        ({"n": 2**60}, "2\\*\\*53"),
        ({"t": "a\ud800"}, "surrogate"),
        ({"t": "a\x00"}, "control"),
        ({"": 1}, "keys"),
    ],
)
def test_props_are_json_values_within_bounds(props: dict[str, object], reason: str):
    with pytest.raises(InvalidEvent, match=reason):
        validate(event(props=props))


def test_msgpack_props_refuse_bytes_and_extension_types():
    for value in (b"raw", msgpack.ExtType(5, b"x")):
        raw = msgpack.packb(event(props={"x": value}), use_bin_type=True)
        with pytest.raises(InvalidEvent, match="JSON value"):
            parse(raw)
    raw = msgpack.packb(event(props={1: "int key"}), use_bin_type=True)
    with pytest.raises(InvalidEvent, match="keys"):
        parse(raw)


def test_text_props_keep_ordinary_line_breaks():
    assert validate(event(props={"comment": "line 1\nline 2\ttab"})).props["comment"]


def test_cart_lines_and_quantities_are_bounded_and_pack():
    profile = None
    for n in range(CART_LINES + 50):
        profile = apply(profile, validate(event(event_id=f"e{n}", item_id=f"i{n}")))
    assert profile is not None and len(profile.cart) == CART_LINES
    assert "i0" not in profile.cart and f"i{CART_LINES + 49}" in profile.cart
    for n in range(5):
        big = event(event_id=f"q{n}", item_id="heavy", quantity=MAX_QUANTITY)
        profile = apply(profile, validate(big))
    assert profile.cart["heavy"] == CART_QUANTITY
    assert Profile.unpack(profile.pack()).cart == profile.cart


def test_long_affinity_and_order_keys_are_cut():
    props = {"category": "c" * 2000, "brand": "b" * 2000, "order_id": "o" * 2000}
    profile = apply(None, validate(event(type="purchase", props=props, price=1.0)))
    assert max(map(len, profile.categories)) <= 128 and max(map(len, profile.brands)) <= 128
    assert len(profile.last_order) <= 128


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"item_id": "i\x00"}, "item_id contains a control"),
        ({"title": "t\ud800"}, "title contains a lone surrogate"),
        ({"price": 10**400}, "price"),
        ({"price": 2**64 - 1}, "at most"),
    ],
)
def test_hostile_products_are_refused_with_a_reason(change: dict[str, object], reason: str):
    product = {
        "item_id": "i1",
        "title": "T",
        "url": "https://shop.example/i1",
        "image_url": "https://shop.example/i1.jpg",
        "price": 1.0,
        "currency": "EUR",
        **change,
    }
    raw = json.dumps(product).encode()  # escapes the surrogate and the NUL
    with pytest.raises(InvalidProduct, match=reason):
        parse_product(raw)


def _twice(body: bytes, key: bytes, first: bytes, then: bytes) -> bytes:
    """A msgpack map of `body`'s entries with `key` given twice (first `first`, then `then`):
    packb cannot write one, so the map header is counted up by hand (fixmaps only)."""
    assert body[0] & 0xF0 == 0x80 and (body[0] & 0x0F) < 14
    return bytes([body[0] + 2]) + body[1:] + key + first + key + then


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            b'{"event_id":"e1","type":"page_view","user_id":"a","user_id":"b","ts":1700000000000}',
            "'user_id' more than once",
        ),
        (
            b'{"event_id":"e1","type":"page_view","user_id":"a","ts":1700000000000,'
            b'"props":{"page":"x","page":"y"}}',
            "props gives the key 'page' more than once",
        ),
        (
            _twice(
                msgpack.packb({"event_id": "e1", "type": "page_view", "ts": 1700000000000}),
                b"\xa7user_id",
                b"\xa1a",
                b"\xa1b",
            ),
            "'user_id' more than once",
        ),
    ],
)
def test_a_key_given_twice_is_refused_with_a_reason(raw: bytes, reason: str):
    """JSON parsers disagree on a repeated key (first or last value, or an error): a gateway
    that checked `user_id` "a" must not see Persona fold the event under "b"."""
    with pytest.raises(InvalidEvent, match=reason):
        parse(raw)


PRODUCT = (
    b'"title":"T","url":"https://shop.example/i1","image_url":"https://shop.example/i1.jpg",'
    b'"price":1.0,"currency":"EUR"'
)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"item_id":"i1","item_id":"i2",' + PRODUCT + b"}", "'item_id' more than once"),
        (
            b'{"item_id":"i1",' + PRODUCT + b',"attributes":{"color":"red","color":"blue"}}',
            "attributes gives the key 'color' more than once",
        ),
        (  # a price in each currency: which one a parser keeps is a different price
            b'{"item_id":"i1",' + PRODUCT + b',"prices":{"USD":2.0,"USD":3.0}}',
            "prices gives the key 'USD' more than once",
        ),
        (  # the CSV/TSV cell form of the same
            b'{"item_id":"i1",' + PRODUCT + b',"prices":"2.00 USD, 3.00 USD"}',
            "prices gives the currency 'USD' more than once",
        ),
        (  # one currency in two cases: the same key once upper-cased
            b'{"item_id":"i1",' + PRODUCT + b',"prices":{"usd":2.0,"USD":3.0}}',
            "prices gives the currency 'USD' more than once",
        ),
        (
            _twice(
                msgpack.packb({"title": "T", "price": 1.0, "currency": "EUR"}),
                b"\xa7item_id",
                b"\xa2i1",
                b"\xa2i2",
            ),
            "'item_id' more than once",
        ),
    ],
)
def test_a_product_giving_a_key_twice_is_refused_with_a_reason(raw: bytes, reason: str):
    with pytest.raises(InvalidProduct, match=reason):
        parse_product(raw)


def test_a_json_lines_feed_row_giving_a_key_twice_is_rejected_alone():
    feed = b'{"item_id":"i1","item_id":"i2",' + PRODUCT + b'}\n{"item_id":"i3",' + PRODUCT + b"}\n"
    rejected: list[tuple[int, str]] = []
    products = list(
        read_products(io.BytesIO(feed), "auto", None, lambda n, r: rejected.append((n, r)))
    )
    assert [p.item_id for p in products] == ["i3"]
    assert rejected == [(1, "the product gives the key 'item_id' more than once")]


@pytest.mark.parametrize("history", [False, True])
def test_a_ts_of_thousands_of_digits_is_cut_in_its_reason(history: bool):
    huge = int("9" * 4000)  # JSON allows integers up to 4,300 digits
    with pytest.raises(InvalidEvent) as refused:
        parse_ts(huge, history=history)
    reason = str(refused.value)
    assert "outside" in reason
    assert "(4000 characters)" in reason
    assert len(reason) < 300, reason
