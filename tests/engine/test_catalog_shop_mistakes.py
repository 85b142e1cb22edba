"""What a shop's feed gets wrong most often, each refused (or read) with a reason that says what
to write instead: decimal commas and thousands separators in prices, currency symbols, relative
links, schema.org availability words, and an item id given twice in one feed."""

from __future__ import annotations

import io
from typing import Any

import pytest

from engine.catalog import InvalidProduct, validate_product
from engine.catalog_formats import read_products

BASE: dict[str, Any] = {
    "item_id": "a",
    "title": "A lamp",
    "url": "https://shop.example/a",
    "image_url": "https://shop.example/a.jpg",
    "price": 12.5,
    "currency": "EUR",
}
HEADER = "item_id,title,url,image_url,price,currency,availability\n"


def _csv(rows: str) -> tuple[list[Any], list[tuple[int, str]], list[str]]:
    rejected: list[tuple[int, str]] = []
    warned: list[str] = []
    products = list(
        read_products(
            io.BytesIO((HEADER + rows).encode()),
            "csv",
            reject=lambda line, reason: rejected.append((line, reason)),
            warn=warned.append,
        )
    )
    return products, rejected, warned


@pytest.mark.parametrize(
    ("written", "hint"),
    [
        ("12,50", "write 12.50"),
        ("1.299,00", "write 1299.00"),
        ("1,299.00", "write 1299.00"),
        ("1 299.00", "write 1299.00"),
        ("€24.90", "write 24.90"),
        ("24.90€", "write 24.90"),
        ("$1,299.00", "write 1299.00"),
    ],
)
def test_a_price_written_for_people_is_refused_saying_what_to_write_instead(
    written: str, hint: str
) -> None:
    with pytest.raises(InvalidProduct) as refused:
        validate_product({**BASE, "price": written})
    assert refused.value.reason.startswith(f"price must be a number >= 0, not {written!r}")
    assert hint in refused.value.reason
    with pytest.raises(InvalidProduct) as refused_sale:
        validate_product({**BASE, "price": "9999", "sale_price": written})
    assert hint in refused_sale.value.reason


def test_a_price_of_no_readable_form_gets_no_made_up_hint() -> None:
    with pytest.raises(InvalidProduct) as refused:
        validate_product({**BASE, "price": "cheap"})
    assert refused.value.reason == "price must be a number >= 0, not 'cheap'"


def test_a_google_price_with_a_decimal_comma_is_refused_per_row_with_the_hint() -> None:
    rows = 'a,A,https://s.example/a,https://s.example/a.jpg,"12,50 EUR",,in_stock\n'
    rows += "b,B,https://s.example/b,https://s.example/b.jpg,12.50 EUR,,in_stock\n"
    products, rejected, _ = _csv(rows)
    assert [p.item_id for p in products] == ["b"]
    assert rejected == [
        (
            2,
            "price must be a number >= 0, not '12,50': write 12.50 (a decimal point, no "
            "thousands separator)",
        )
    ]


def test_a_relative_link_is_refused_naming_it() -> None:
    with pytest.raises(InvalidProduct) as refused:
        validate_product({**BASE, "url": "/products/a"})
    assert refused.value.reason == (
        "url must be an absolute http(s) URL (e-mail clients need one), not '/products/a': "
        "write it with its scheme and host, such as https://shop.example.com/products/a"
    )


@pytest.mark.parametrize(
    ("written", "availability"),
    [
        ("InStock", "in_stock"),
        ("https://schema.org/InStock", "in_stock"),
        ("http://schema.org/OutOfStock", "out_of_stock"),
        ("SoldOut", "out_of_stock"),
        ("Discontinued", "out_of_stock"),
        ("PreOrder", "preorder"),
        ("BackOrder", "preorder"),
        ("In Stock", "in_stock"),
        ("IN_STOCK", "in_stock"),
    ],
)
def test_schema_org_availability_words_are_read(written: str, availability: str) -> None:
    products, rejected, _ = _csv(
        f"a,A,https://s.example/a,https://s.example/a.jpg,1,EUR,{written}\n"
    )
    assert rejected == [] and products[0].availability == availability


def test_an_unknown_availability_is_refused_as_the_feed_wrote_it() -> None:
    _, rejected, _ = _csv("a,A,https://s.example/a,https://s.example/a.jpg,1,EUR,Maybe Later\n")
    assert rejected == [
        (2, "availability must be one of in_stock, out_of_stock, preorder, not 'Maybe Later'")
    ]


def test_an_item_id_given_twice_in_one_feed_is_warned_about_with_both_lines() -> None:
    rows = "a,A,https://s.example/a,https://s.example/a.jpg,1,EUR,in_stock\n"
    rows += "b,B,https://s.example/b,https://s.example/b.jpg,1,EUR,in_stock\n"
    rows += "a,A2,https://s.example/a,https://s.example/a.jpg,2,EUR,in_stock\n"
    products, rejected, warned = _csv(rows)
    assert [p.item_id for p in products] == ["a", "b", "a"] and rejected == []
    assert warned == ["line 4: item_id 'a' was given before (line 2): the later row wins"]


def test_many_repeated_ids_are_warned_about_a_bounded_number_of_times_then_counted() -> None:
    rows = "".join(
        f"x{i % 10},X,https://s.example/x,https://s.example/x.jpg,1,EUR,in_stock\n"
        for i in range(500)
    )
    _, _, warned = _csv(rows)
    assert len(warned) <= 25
    assert warned[-1] == "490 rows gave an item_id given before in this feed: the later row wins"


def test_a_row_with_several_problems_is_refused_naming_each_first_one_first() -> None:
    """A refused row named only its first problem: a shop fixed it, re-imported, and met the
    next. Every problem is named now, in the order the fields are checked, the first one where it
    always was (the reason begins with it); past MAX_PROBLEMS only a count."""
    with pytest.raises(InvalidProduct) as refused:
        validate_product(
            {**BASE, "price": "12,50", "currency": "euro", "url": "/a", "condition": "mint"}
        )
    reason = refused.value.reason
    assert reason.startswith("price must be a number >= 0, not '12,50'")
    assert refused.value.problems[0].startswith("price must be")
    assert [p.split()[0] for p in refused.value.problems] == [
        "price",
        "currency",
        "url",
        "condition",
    ]
    for problem in refused.value.problems[1:]:
        assert problem in reason
    assert "more" not in reason
    # a single problem reads as before: nothing added
    with pytest.raises(InvalidProduct) as alone:
        validate_product({**BASE, "currency": "EU1"})
    assert alone.value.reason == "currency must be an ISO 4217 code such as 'EUR', not 'EU1'"
    assert alone.value.problems == [alone.value.reason]
    # many problems: the first MAX_PROBLEMS named, then how many more
    every = {
        "item_id": "",
        "price": "x",
        "currency": "euro",
        "availability": "soon",
        "title": "",
        "url": "/a",
        "image_url": "/a.jpg",
        "gtin": "12",
        "condition": "mint",
    }
    with pytest.raises(InvalidProduct) as many:
        validate_product(every)
    assert len(many.value.problems) == 9
    assert many.value.reason.startswith(many.value.problems[0])
    assert many.value.reason.endswith("and 4 more")
    assert many.value.problems[5] not in many.value.reason
    assert len(many.value.reason) < 2_000


def test_a_csv_row_with_several_problems_is_rejected_naming_each() -> None:
    products, rejected, _ = _csv("a,A lamp,/a,https://shop.example/a.jpg,12;50,euro,in_stock\n")
    assert products == []
    ((line, reason),) = rejected
    assert line == 2
    assert reason.startswith("price must be a number >= 0, not '12;50'")  # the first, first
    assert "price" in reason and "url" in reason and "currency" in reason


@pytest.mark.parametrize("url", ["https://[shop.example/a", "https://shop.example]/a"])
@pytest.mark.parametrize("field", ["url", "image_url"])
def test_a_link_with_an_unbalanced_bracket_in_its_host_is_refused(field: str, url: str) -> None:
    """No browser opens `https://[shop.example/a` (a `[` starts an IPv6 address), and urllib
    raised ValueError splitting it: adding PERSONA_UTM failed every e-mail block holding the
    item (tests/api/test_click_links.py). Refused at intake, naming the field."""
    with pytest.raises(InvalidProduct, match=f"{field} is not a URL a browser can open"):
        validate_product({**BASE, field: url})
