"""Values of a product that Python reads but no product means: a NaN or an infinity where text is
expected (JSON's NaN item_id became the product "nan", Infinity the title "inf"), and ISO 8601
times before 1970 (availability_date "0001-01-01" became -62135596800000 epoch ms, which the
same field refuses when it is written as epoch ms)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.catalog import InvalidProduct, validate_product

GOOD: dict[str, Any] = {
    "item_id": "a1",
    "title": "T",
    "url": "https://x.example/a",
    "image_url": "https://x.example/a.png",
    "price": 2,
    "currency": "EUR",
}


@pytest.mark.parametrize("name", ["item_id", "title", "brand", "category", "mpn"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_number_is_not_text(name: str, value: float) -> None:
    with pytest.raises(InvalidProduct, match=name):
        validate_product(GOOD | {name: value})


@pytest.mark.parametrize(
    "change",
    [
        {"availability_date": "0001-01-01"},
        {"availability_date": "1969-12-31T23:59:59Z"},
        {"sale_price": 1, "sale_starts": "1900-01-01"},
        {"sale_price": 1, "sale_price_effective_date": "0001-01-01T00:00+14:00/2030-01-01"},
    ],
)
def test_a_time_before_1970_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidProduct):
        validate_product(GOOD | change)


def test_numbers_as_text_and_times_from_1970_still_read() -> None:
    product = validate_product(
        GOOD
        | {
            "item_id": 12345,
            "title": 1.5,
            "availability_date": "1970-01-01",
            "sale_price": 1,
            "sale_price_effective_date": "2026-01-01/2026-02-01",
        }
    )
    assert (product.item_id, product.title, product.availability_date) == ("12345", "1.5", 0)
    assert product.sale_starts is not None and product.sale_starts > 0


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("price", "abc", "'abc'"),
        ("price", -1, "-1"),
        ("price", 10**4000, "an integer of 13288 bits"),
        ("availability", "instock", "'instock'"),
        ("currency", "E1R", "'E1R'"),
        ("gtin", "12ab", "'12ab'"),
        ("condition", "mint", "'mint'"),
        ("sale_price", "x" * 500, "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (502 characters)"),
        ("availability_date", "yesterday", "'yesterday'"),
        ("price", "\n\x1b[31m", "'\\n\\x1b[31m'"),
    ],
)
def test_a_refused_value_is_shown_in_the_reason_one_line_and_bounded(
    field: str, value: Any, shown: str
) -> None:
    """A shop reading 'availability must be one of ...' for row 7,412 of its feed needs to see
    what the row said; the value comes escaped (one line, no terminal codes) and cut short."""
    with pytest.raises(InvalidProduct) as refused:
        validate_product(GOOD | {field: value})
    reason = str(refused.value)
    assert reason.startswith(field) and reason.endswith(f", not {shown}"), reason
    assert "\n" not in reason and "\x1b" not in reason and len(reason) < 200
