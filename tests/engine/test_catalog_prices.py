"""Products priced in several currencies (issue 19 item 6): an optional `prices` map of ISO 4217
code -> list price beside `price`/`currency`, validated and bounded, read from JSON lines and
CSV/TSV cells, stored only when present."""

from __future__ import annotations

import io
from typing import Any

import msgpack
import pytest

from engine.catalog import MAX_PRICES, InvalidProduct, Product, validate_product
from engine.catalog_formats import read_products

BASE: dict[str, Any] = {
    "item_id": "a",
    "title": "A lamp",
    "url": "https://shop.example/a",
    "image_url": "https://shop.example/a.jpg",
    "price": 12.5,
    "currency": "EUR",
}


def test_prices_in_other_currencies_are_kept_by_upper_case_code() -> None:
    product = validate_product({**BASE, "prices": {"pln": 54, "GBP": "10.99", "EUR": 12.5}})
    assert product.prices == {"PLN": 54.0, "GBP": 10.99}  # its own currency is `price`
    assert Product.unpack(product.pack()) == product


def test_a_product_without_prices_is_stored_as_before() -> None:
    product = validate_product(BASE)
    assert product.prices == {} and "prices" not in msgpack.unpackb(product.pack())


@pytest.mark.parametrize(
    ("prices", "reason"),
    [
        ({"PL": 54}, "ISO 4217"),
        ({"PLNX": 54}, "ISO 4217"),
        ({"P1N": 54}, "ISO 4217"),
        ({"PLN": -1}, "PLN"),
        ({"PLN": float("nan")}, "PLN"),
        ({"PLN": 2e9}, "PLN"),
        ({"PLN": True}, "PLN"),
        ({"PLN": "cheap"}, "PLN"),
        ({"EUR": 13}, "differs from price"),
        ({f"Q{chr(65 + i // 26)}{chr(65 + i % 26)}": 1 for i in range(MAX_PRICES + 1)}, "at most"),
        (["PLN", 54], "object"),
        ("54 PLN 3", "written as"),
    ],
)
def test_bad_prices_reject_the_product_with_a_reason(prices: Any, reason: str) -> None:
    with pytest.raises(InvalidProduct, match=reason):
        validate_product({**BASE, "prices": prices})


def test_prices_from_json_lines_and_a_csv_cell() -> None:
    jsonl = '{"item_id": "a", "title": "A", "url": "https://s.example/a", "image_url": '
    jsonl += '"https://s.example/a.jpg", "price": 12.5, "currency": "EUR", "prices": {"PLN": 54}}\n'
    (from_json,) = read_products(io.BytesIO(jsonl.encode()), "jsonl")
    assert from_json.prices == {"PLN": 54.0}
    csv = "item_id,title,url,image_url,price,currency,prices\n"
    csv += 'b,B,https://s.example/b,https://s.example/b.jpg,10,GBP,"54.00 PLN, 12.5 EUR"\n'
    (from_csv,) = read_products(io.BytesIO(csv.encode()), "csv")
    assert from_csv.prices == {"PLN": 54.0, "EUR": 12.5} and from_csv.attributes == {}


def test_negative_zero_prices_are_zero() -> None:
    """A feed's `-0` (or `-0.00 EUR`) was kept as -0.0: e-mail blocks showed "€-0.00" and the
    Google feed a negative price "-0.00 EUR"."""
    from engine.feeds import stream
    from engine.locales import format_price

    product = validate_product({**BASE, "price": "-0", "prices": {"PLN": "-0.0"}})
    assert str(product.price) == "0.0" and str(product.prices["PLN"]) == "0.0"
    sale = validate_product({**BASE, "sale_price": -0.0})
    assert str(sale.sale_price) == "0.0"
    assert "-" not in format_price(product.price, "EUR", "en")
    assert "\t0.00 EUR\t" in "".join(stream("google.tsv", [product]))


@pytest.mark.parametrize("written", ["1_000", "\u0661\u0662", "12,50", "0x10", "1 000", "", True])
def test_a_price_that_is_not_a_plain_decimal_number_is_refused(written: object) -> None:
    """Python's float() reads "1_000" as 1000 and Arabic-Indic digits as 12, and True as 1.0: a
    feed means none of these as a price."""
    with pytest.raises(InvalidProduct, match="price must be a number"):
        validate_product({**BASE, "price": written})
    if written == "":
        return  # an empty sale_price cell is no sale
    with pytest.raises(InvalidProduct, match="sale_price must be a number"):
        validate_product({**BASE, "price": "20", "sale_price": written})


@pytest.mark.parametrize(
    ("written", "price"),
    [("12.50", 12.5), (" 12.5 ", 12.5), ("1e3", 1000.0), (".5", 0.5), (7, 7.0)],
)
def test_plain_decimal_prices_are_read(written: object, price: float) -> None:
    assert validate_product({**BASE, "price": written}).price == price
