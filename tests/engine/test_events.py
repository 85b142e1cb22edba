import json

import msgpack
import pytest

from engine.events import InvalidEvent, decode, encode, parse, parse_ts, topic_for, validate

BASE = {
    "event_id": "e1",
    "type": "product_view",
    "user_id": "u1",
    "ts": 1700000000000,
    "item_id": "i1",
}


def test_valid_event_round_trips_through_json_and_msgpack():
    event = validate(BASE)
    assert parse(encode(event, "json")) == event
    assert parse(encode(event, "msgpack")) == event
    assert parse(json.dumps(BASE).encode()) == event
    assert parse(msgpack.packb(BASE)) == event


def test_rfc3339_and_epoch_ms_agree():
    assert parse_ts("2023-11-14T22:13:20Z") == 1700000000000
    assert parse_ts("2023-11-14T23:13:20+01:00") == 1700000000000
    assert parse_ts(1700000000000) == 1700000000000


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"type": "teleport"}, "unknown event type"),
        ({"user_id": None}, "user_id"),
        ({"user_id": "a@b.com"}, "e-mail"),
        ({"ts": "yesterday"}, "RFC 3339"),
        ({"ts": "2023-11-14T22:13:20"}, "time zone"),
        ({"ts": 1700000000}, "epoch milliseconds"),
        ({"ts": True}, "ts"),
        ({"item_id": None}, "item_id"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"price": -1}, "price"),
        ({"price": float("nan")}, "price"),
        ({"currency": "euro"}, "currency"),
        ({"props": [1]}, "props"),
        ({"user_id": "user-\u202e1"}, "user_id contains an invisible character (U+202E"),
        ({"item_id": "\ufeffsku-1"}, "item_id contains an invisible character (U+FEFF"),
        ({"event_id": "e\u200b1"}, "event_id contains an invisible character (U+200B"),
    ],
)
def test_invalid_events_say_why(change, reason):
    data = {**BASE, **change}
    if change.get("user_id", 1) is None:
        del data["user_id"]
    if "item_id" in change and change["item_id"] is None:
        del data["item_id"]
    with pytest.raises(InvalidEvent) as info:
        validate(data)
    assert reason in info.value.reason


def test_item_required_only_where_the_contract_says():
    page = {k: v for k, v in BASE.items() if k != "item_id"} | {"type": "page_view"}
    assert validate(page).item_id is None
    checkout = page | {"type": "checkout"}
    assert validate(checkout).type == "checkout"
    with pytest.raises(InvalidEvent):
        validate(page | {"type": "add_to_cart"})


def test_consent_needs_boolean_purposes():
    consent = {**BASE, "type": "consent", "props": {"email": False}}
    assert validate(consent).props == {"email": False}
    with pytest.raises(InvalidEvent, match="consent"):
        validate({**BASE, "type": "consent", "props": {}})
    with pytest.raises(InvalidEvent, match="true or false"):
        validate({**BASE, "type": "consent", "props": {"ads": "yes"}})


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xc1\xc1", b"[1,2]", b"42"])
def test_undecodable_or_non_object_messages_are_invalid(raw):
    with pytest.raises(InvalidEvent):
        validate(decode(raw))


def test_topics_by_type():
    assert topic_for("purchase") == "cart"
    assert topic_for("like") == "social"
    assert topic_for("search") == "clickstream"
    assert topic_for("consent") == "clickstream"


def test_identify_needs_a_previous_id_other_than_the_user():
    identify = {**BASE, "type": "identify", "user_id": "u42", "props": {"previous_id": "anon-1"}}
    del identify["item_id"]
    event = validate(identify)
    assert event.type == "identify" and event.props["previous_id"] == "anon-1"
    assert topic_for("identify") == "clickstream"
    for props, reason in (
        ({}, "previous_id"),
        ({"previous_id": 7}, "previous_id"),
        ({"previous_id": "x" * 129}, "previous_id"),
        ({"previous_id": "a\u0000b"}, "previous_id"),
        ({"previous_id": "u42"}, "differ"),
    ):
        with pytest.raises(InvalidEvent, match=reason):
            validate(identify | {"props": props})
