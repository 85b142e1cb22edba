"""The reasons given for the mistakes event producers commonly make (issue: probe-producers).

Each reason names the field, what was expected, what was found and, for a common mistake, what
to send instead; nothing here is accepted that the contract refuses (a `ts` in seconds is never
multiplied, a `"2.50"` price never read as a number). The HTTP route and the Kafka fold share
`validate`, so each case is checked through both (`validate` and `parse` of JSON and msgpack)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from engine.events import InvalidEvent, parse, validate

BASE = {
    "event_id": "e1",
    "type": "add_to_cart",
    "user_id": "u1",
    "ts": 1_700_000_000_000,
    "item_id": "i1",
}


def reasons(data: Any) -> set[str]:
    """The reason for `data` through the route (`validate`) and both topic encodings."""
    found = set()
    for attempt in (
        lambda: validate(data),
        lambda: parse(json.dumps(data).encode()),
        lambda: parse(msgpack.packb(data)),
    ):
        with pytest.raises(InvalidEvent) as caught:
            attempt()
        found.add(caught.value.reason)
    return found


def reason(change: dict[str, Any]) -> str:
    found = reasons({**BASE, **change})
    assert len(found) == 1, found  # the same decision and reason on every path
    return found.pop()


@pytest.mark.parametrize(
    ("ts", "words"),
    [
        (1_700_000_000, ["looks like seconds", "send epoch milliseconds", "1700000000000"]),
        (1_700_000_000.25, ["looks like seconds", "1700000000250"]),
        (1_700_000_000_000_000, ["looks like microseconds", "1700000000000"]),
        (1_700_000_000_000_000_000, ["looks like nanoseconds", "1700000000000"]),
        (1_700_000_000_000.5, ["whole number of milliseconds", "1700000000000"]),
        ("1700000000000", ["a number in a string", "JSON number", "1700000000000"]),
        ("1700000000", ["a number in a string", "looks like seconds", "1700000000000"]),
        (None, ["ts", "got null"]),
        ([1], ["ts", "got an array"]),
        ("2023-11-14", ["time zone offset", "'2023-11-14T22:13:20Z'"]),
    ],
)
def test_a_ts_in_another_unit_or_form_says_which_and_what_to_send(
    ts: Any, words: list[str]
) -> None:
    text = reason({"ts": ts})
    for word in words:
        assert word in text, text


def test_a_ts_in_seconds_is_never_read_as_milliseconds_times_1000() -> None:
    with pytest.raises(InvalidEvent):
        validate({**BASE, "ts": 1_700_000_000})
    with pytest.raises(InvalidEvent):
        validate({**BASE, "ts": "1700000000000"})


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"price": "2.50"}, ["price", "got the string '2.50'", "send 2.5"]),
        ({"price": "2,50"}, ["price", "got the string '2,50'", "decimal point", "send 2.5"]),
        ({"price": "cheap"}, ["price", "got the string 'cheap'"]),
        ({"price": -1}, ["price", ">= 0", "got -1"]),
        ({"quantity": "2"}, ["quantity", "got the string '2'", "send 2"]),
        ({"quantity": 2.0}, ["quantity", "got 2.0", "send 2"]),
        ({"quantity": 0}, ["quantity", "got 0", "remove_from_cart"]),
        ({"quantity": -1}, ["quantity", "got -1", "remove_from_cart"]),
        ({"quantity": None}, ["quantity", "got null"]),
        ({"currency": "eur"}, ["currency", "'eur'", "capital", "'EUR'"]),
        ({"currency": "€"}, ["currency", "'€'", "symbol", "ISO 4217"]),
        ({"currency": "euro"}, ["currency", "'euro'", "ISO 4217"]),
        ({"currency": 978}, ["currency", "got the number 978", "ISO 4217"]),
        ({"user_id": 42}, ["user_id must be a string", "got the number 42", 'send "42"']),
        ({"event_id": 7}, ["event_id must be a string", "got the number 7", 'send "7"']),
        ({"item_id": 9}, ["item_id must be a string", "got the number 9"]),
        ({"session_id": True}, ["session_id must be a string", "got true"]),
        ({"props": '{"query": "shoes"}'}, ["props must be an object", "encoded twice"]),
        ({"props": "shoes"}, ["props must be an object", "got the string 'shoes'"]),
        ({"props": [1]}, ["props must be an object", "got an array"]),
    ],
)
def test_a_field_of_the_wrong_form_names_what_was_found(
    change: dict[str, Any], words: list[str]
) -> None:
    text = reason(change)
    for word in words:
        assert word in text, text


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("Purchase", "purchase"),
        ("PURCHASE", "purchase"),
        ("add-to-cart", "add_to_cart"),
        ("addToCart", "add_to_cart"),
        ("AddToCart", "add_to_cart"),
        ("Add To Cart", "add_to_cart"),
        (" add_to_cart", "add_to_cart"),
        ("view_item", "product_view"),  # GA4
        ("view_item_list", "category_view"),
        ("begin_checkout", "checkout"),
        ("Product Viewed", "product_view"),  # Segment
        ("Product Added", "add_to_cart"),
        ("Product Removed", "remove_from_cart"),
        ("Checkout Started", "checkout"),
        ("Order Completed", "purchase"),
        ("Products Searched", "search"),
        ("pageview", "page_view"),
    ],
)
def test_a_type_in_another_spelling_or_vocabulary_names_persona_s(given: str, meant: str) -> None:
    text = reason({"type": given})
    assert f"unknown event type {given!r}" in text
    assert f"send {meant!r}" in text, text


@pytest.mark.parametrize("given", ["refund", "Order Refunded"])
def test_a_refund_says_how_persona_records_one(given: str) -> None:
    text = reason({"type": given})
    assert "'purchase'" in text and "props.returned" in text, text


def test_an_unknown_type_with_no_likely_meaning_lists_the_types() -> None:
    text = reason({"type": "teleport"})
    assert "unknown event type 'teleport'" in text
    assert "page_view" in text and "purchase" in text and "identify" in text


def test_a_type_that_is_not_a_string_says_what_it_is() -> None:
    assert "type must be a string, got the number 3" in reason({"type": 3})


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ([BASE], ["an event must be an object", "got an array"]),
        (json.dumps(BASE), ["an event must be an object", "encoded twice"]),
        ("hello", ["an event must be an object", "got the string 'hello'"]),
        (None, ["an event must be an object", "got null"]),
        (42, ["an event must be an object", "got the number 42"]),
    ],
)
def test_a_value_that_is_no_object_says_what_it_is_in_json_terms(
    value: Any, words: list[str]
) -> None:
    """Python's type names (`list`, `str`, `NoneType`) meant nothing to a JavaScript producer."""
    with pytest.raises(InvalidEvent) as caught:
        validate(value)
    for word in words:
        assert word in caught.value.reason, caught.value.reason


def test_a_kafka_value_with_a_byte_order_mark_reads_as_the_http_route_reads_it() -> None:
    """RFC 8259 lets a parser ignore a leading BOM; .NET's and PowerShell's UTF-8 writers add one.
    Before, the value went to msgpack: 'neither JSON nor msgpack: ExtraData'."""
    raw = json.dumps(BASE).encode()
    assert parse(b"\xef\xbb\xbf" + raw) == validate(BASE)
    assert parse(b"\xef\xbb\xbf\n " + raw) == validate(BASE)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (json.dumps(json.dumps(BASE)).encode(), ["encoded twice", "send the object itself"]),
        (b'"hello"', ["an event must be an object", "got the string 'hello'"]),
        (b"null", ["an event must be an object", "got null"]),
        (b"42", ["an event must be an object", "got the number 42"]),
        (b"-1", ["an event must be an object", "got the number -1"]),
        (b"true", ["an event must be an object", "got true"]),
    ],
)
def test_a_kafka_value_of_json_that_is_no_object_says_so_as_the_route_does(
    raw: bytes, words: list[str]
) -> None:
    """A JSON serializer given a string already encoded (a common Kafka producer mistake) wrote a
    JSON string; it was read as msgpack and refused as 'neither JSON nor msgpack'."""
    with pytest.raises(InvalidEvent) as caught:
        parse(raw)
    for word in words:
        assert word in caught.value.reason, caught.value.reason
    with pytest.raises(InvalidEvent) as route:
        validate(json.loads(raw))
    assert route.value.reason == caught.value.reason


def test_an_object_wrapping_the_events_says_to_send_them_themselves() -> None:
    """Segment's batch API and others wrap events: `{"batch": [...]}`; the reason was only
    "missing required field 'event_id'"."""
    for key in ("events", "batch", "data"):
        text = reason_of({key: [BASE]})
        assert "missing required field 'event_id'" in text
        assert f"a list of objects under {key!r}" in text and "events themselves" in text, text


def test_an_empty_wrapper_says_it_holds_no_events() -> None:
    """`{"events": []}` (a batch wrapper sent with nothing in it) said only that `event_id` is
    missing, where a wrapper with events in it names the wrapper."""
    for key in ("events", "batch"):
        text = reason_of({key: []})
        assert "missing required field 'event_id'" in text
        assert f"an empty list under {key!r}" in text and "events themselves" in text, text
    # an object with more than its list is no wrapper: the plain reason
    assert reason_of({"events": [], "shop": 1, "sent": 2}) == "missing required field 'event_id'"


def reason_of(data: Any) -> str:
    found = reasons(data)
    assert len(found) == 1, found
    return found.pop()


@pytest.mark.parametrize("key", ["items", "products", "line_items"])
def test_a_purchase_of_several_items_in_a_list_says_one_event_per_item(key: str) -> None:
    """A shop's order (`{"type": "purchase", "items": [{...}, {...}]}`) got only "missing required
    field 'item_id'": the reason says the list was seen and to send one event per item."""
    data = {k: v for k, v in BASE.items() if k != "item_id"}
    data.update(type="purchase", **{key: [{"item_id": "a", "price": 2.5}, {"item_id": "b"}]})
    (reason,) = reasons(data)
    assert reason.startswith("missing required field 'item_id'"), reason
    assert repr(key) in reason and "one purchase event per item" in reason, reason
