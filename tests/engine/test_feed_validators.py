"""The generated ad feeds pass the platforms' checks (issue 19 item 5): every row of every feed of a
varied catalog is validated by tests/engine/feed_specs.py, written from the published specs."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest

from engine.catalog import Product, parse_time, validate_product
from engine.feeds import Channel, stream
from tests.engine import feed_specs

NOW = parse_time("2026-12-15")
G = "{http://base.google.com/ns/1.0}"


def make(item_id: str, **kw: Any) -> Product:
    base = {
        "item_id": item_id,
        "title": f"Product {item_id}",
        "url": f"https://shop.example.com/p/{item_id}",
        "image_url": f"https://shop.example.com/i/{item_id}.jpg",
        "price": 20,
        "currency": "EUR",
    }
    return validate_product(base | kw)


CATALOG = [
    make("plain"),  # no brand, no identifiers
    make("branded", brand="Acme", mpn="AC-1", category="Home > Lamps", description="Bright"),
    make("gtin", gtin="4006381333931", brand="Acme", condition="used"),
    make("brand-only", brand="Acme"),
    make("pre", availability="preorder", availability_date="2027-01-15", brand="Acme"),
    make("gone", availability="out_of_stock", item_group_id="g1"),
    make("on-sale", sale_price=15, sale_starts=NOW - 1000, sale_ends=NOW + 86_400_000),
    make("sale-over", sale_price=15, sale_starts=NOW - 10**9, sale_ends=NOW - 1),
    make("sale-ahead", sale_price=15, sale_price_effective_date="2027-01-01/2027-01-31"),
    make("sale-always", sale_price=12),
    make("odd id/with spaces ü" + "x" * 60, title="T" * 400, description="d " * 2500),
    make(
        "images",
        additional_image_links=[f"https://shop.example.com/i/x{i}.jpg" for i in range(10)],
        attributes={"google_product_category": "Home & Garden > Lighting"},
        item_group_id="lamps",
    ),
]
CHANNEL = Channel(title="Example Shop", link="https://shop.example.com/", now_ms=NOW)


def rows(name: str, channel: Channel = CHANNEL) -> list[dict[str, str]]:
    text = "".join(stream(name, CATALOG, channel=channel))
    if name == "google.xml":
        return [_xml_item(item) for item in ET.fromstring(text).iter("item")]
    delimiter = "\t" if name.endswith(".tsv") else ","
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def _xml_item(item: ET.Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for field in item:
        name = field.tag.removeprefix(G)
        out[name] = f"{out[name]},{field.text}" if name in out else field.text or ""
    return out


VALIDATORS: dict[str, Callable[[dict[str, str]], list[str]]] = {
    "google.tsv": feed_specs.google,
    "google.xml": feed_specs.google,
    "meta.csv": feed_specs.meta,
    "criteo.csv": feed_specs.criteo,
}


@pytest.mark.parametrize("name", list(VALIDATORS))
def test_every_row_of_every_feed_passes_its_platform(name: str) -> None:
    generated = rows(name)
    assert len(generated) == len(CATALOG)
    problems = {row["id"]: VALIDATORS[name](row) for row in generated}
    assert {k: v for k, v in problems.items() if v} == {}


def by_id(name: str) -> dict[str, dict[str, str]]:
    return {row["id"]: row for row in rows(name)}


def test_identifiers_follow_google() -> None:
    google = by_id("google.tsv")
    assert google["plain"]["identifier_exists"] == "no"
    assert google["brand-only"]["identifier_exists"] == "no"  # a brand alone is not an identifier
    assert google["branded"]["identifier_exists"] == "yes"
    assert google["gtin"]["identifier_exists"] == "yes" and google["gtin"]["condition"] == "used"


def test_pre_orders_carry_their_date_and_each_platform_s_word() -> None:
    assert by_id("google.xml")["pre"]["availability_date"] == "2027-01-15T00:00+0000"
    assert by_id("google.tsv")["pre"]["availability"] == "preorder"
    assert by_id("meta.csv")["pre"]["availability"] == "preorder"  # Meta's own pre-order value
    assert by_id("criteo.csv")["pre"]["availability"] == "preorder"


def test_product_type_comes_from_the_category() -> None:
    for name in VALIDATORS:
        feed = by_id(name)
        assert feed["branded"]["product_type"] == "Home > Lamps"
        assert feed["images"]["google_product_category"] == "Home & Garden > Lighting"
        assert feed["gone"]["item_group_id"] == "g1"


def test_sale_prices_only_while_effective() -> None:
    for name in ("google.tsv", "google.xml", "meta.csv"):
        feed = by_id(name)
        assert feed["on-sale"]["sale_price"] == "15.00 EUR"
        assert feed["on-sale"]["sale_price_effective_date"].count("/") == 1
        assert feed["sale-ahead"]["sale_price"] == "15.00 EUR"  # with its period: applied then
        assert feed["sale-over"].get("sale_price", "") == ""
        assert feed["sale-always"]["sale_price"] == "12.00 EUR"
    criteo = by_id("criteo.csv")  # no period column: the sale only while it runs
    assert criteo["on-sale"]["sale_price"] == "15.00 EUR"
    assert criteo["sale-ahead"]["sale_price"] == "" and criteo["sale-over"]["sale_price"] == ""


def test_meta_names_the_shop_as_brand_of_unbranded_products() -> None:
    meta = by_id("meta.csv")
    assert meta["plain"]["brand"] == "Example Shop"
    assert meta["branded"]["brand"] == "Acme"
    assert meta["gtin"]["brand"] == "Acme"


def test_the_channel_link_is_the_setting_or_the_shop_never_a_placeholder() -> None:
    def channel_link(channel: Channel) -> str:
        text = "".join(stream("google.xml", CATALOG, channel=channel))
        return ET.fromstring(text).findtext("./channel/link") or ""

    assert channel_link(CHANNEL) == "https://shop.example.com/"
    assert channel_link(Channel(title="Example Shop", now_ms=NOW)) == "https://shop.example.com/"
    assert "invalid" not in channel_link(Channel())


def test_the_validators_catch_what_the_platforms_refuse() -> None:
    good = by_id("google.tsv")["pre"]
    assert feed_specs.google(good) == []
    assert "availability_date is required for it" in feed_specs.google(
        good | {"availability_date": ""}
    )
    assert feed_specs.google(good | {"availability": "in stock"})  # Meta's word, not Google's
    assert "identifier_exists must be no" in feed_specs.google(good | {"identifier_exists": "yes"})
    assert "identifier_exists must be yes" in feed_specs.google(good | {"mpn": "AC-2"})
    assert "sale_price is not below price" in feed_specs.google(good | {"sale_price": "30.00 EUR"})
    meta = by_id("meta.csv")["plain"]
    assert "brand, gtin or mpn is required" in feed_specs.meta(meta | {"brand": ""})
    assert feed_specs.meta(meta | {"availability": "in_stock"})
    assert feed_specs.criteo(by_id("criteo.csv")["plain"] | {"price": "20 euros"})
