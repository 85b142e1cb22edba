"""Patterns written `^...$` and applied with `re.match` let one trailing newline through (`$`
matches before it): a currency "EUR\n" was stored as it came, a UTM pair "a=b\n" put a newline in
every tracked link, a feed id "sku\n" was kept as safe, and a request id "r\n" was echoed. Each
check now matches the whole text."""

from __future__ import annotations

import pytest

from api.observability import _request_id
from engine.events import InvalidEvent, validate
from engine.feeds import feed_id
from engine.utm import parse_utm


def test_a_currency_with_a_trailing_newline_is_refused() -> None:
    event = {"event_id": "e1", "type": "purchase", "user_id": "u1", "ts": 1_700_000_000_000,
             "item_id": "i1", "price": 3.0}  # fmt: skip
    assert validate(event | {"currency": "EUR"}).currency == "EUR"
    with pytest.raises(InvalidEvent, match="currency"):
        validate(event | {"currency": "EUR\n"})


def test_a_utm_pair_with_a_newline_is_refused() -> None:
    assert parse_utm("utm_source=mail&utm_medium=x") == "utm_source=mail&utm_medium=x"
    with pytest.raises(ValueError, match="key=value"):
        parse_utm("utm_source=mail\n&utm_medium=x")


def test_a_feed_id_with_a_newline_is_not_kept_as_safe() -> None:
    assert feed_id("sku-1") == "sku-1"
    assert "\n" not in feed_id("sku-1\n") and feed_id("sku-1\n") != "sku-1\n"


def test_a_request_id_with_a_newline_is_not_echoed() -> None:
    assert _request_id("rid-1") == "rid-1"
    assert _request_id("rid-1\n") != "rid-1\n"
