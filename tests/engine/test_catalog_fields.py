"""Products carry Google Merchant Center's extra fields (issue 19 item 4): sale price and its
period, item groups, identifiers, more images, free attributes; old records pack as before."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from engine.catalog import InvalidProduct, Product, parse_product, parse_time, validate_product

BASE = {
    "item_id": "sku-1",
    "title": "Lamp",
    "url": "https://shop.example.com/p/1",
    "image_url": "https://shop.example.com/i/1.jpg",
    "price": "10",
    "currency": "eur",
}
DEC_1 = parse_time("2026-12-01")
DEC_31 = parse_time("2026-12-31")


def product(**kw: Any) -> Product:
    return validate_product({**BASE, **kw})


def test_a_product_without_the_new_fields_packs_as_before() -> None:
    packed = msgpack.unpackb(product().pack())
    assert set(packed) == {
        "item_id",
        "title",
        "url",
        "image_url",
        "price",
        "currency",
        "availability",
        "category",
        "brand",
        "description",
    }


def test_every_field_round_trips_through_the_topic() -> None:
    full = product(
        sale_price="8",
        sale_price_effective_date="2026-12-01T00:00+0100/2026-12-31",
        item_group_id="lamps",
        gtin="4006381333931",
        mpn="L-1",
        condition="refurbished",
        availability="preorder",
        availability_date="2027-01-15",
        additional_image_links="https://shop.example.com/i/2.jpg, https://shop.example.com/i/3.jpg",
        attributes={"custom_label_0": "winter", "color": "red"},
    )
    assert full.sale_starts == DEC_1 - 3_600_000 and full.sale_ends == DEC_31
    assert full.additional_image_links == (
        "https://shop.example.com/i/2.jpg",
        "https://shop.example.com/i/3.jpg",
    )
    assert Product.unpack(full.pack()) == full
    assert parse_product(full.pack()) == full  # the worker validates what the importer packed


def test_the_sale_price_applies_only_inside_its_period() -> None:
    sale = product(sale_price="8", sale_starts=DEC_1, sale_ends=DEC_31)
    assert sale.effective_price(DEC_1 - 1) == 10.0
    assert sale.effective_price(DEC_1) == 8.0
    assert sale.effective_price(DEC_31 - 1) == 8.0
    assert sale.effective_price(DEC_31) == 10.0
    assert product(sale_price="8").effective_price(0) == 8.0  # no period: always
    assert product().effective_price(DEC_1) == 10.0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"sale_price": "12"}, "sale_price must be below price"),
        ({"sale_price": "-1"}, "sale_price must be a finite number"),
        ({"sale_price": "8", "sale_price_effective_date": "2026-12-01"}, "start/end"),
        ({"sale_price": "8", "sale_starts": DEC_31, "sale_ends": DEC_1}, "end must come after"),
        ({"gtin": "12345"}, "gtin must be 8, 12, 13 or 14 digits"),
        ({"condition": "broken"}, "condition must be one of new, refurbished, used"),
        ({"availability_date": "soon"}, "availability_date must be an ISO 8601"),
        ({"additional_image_links": "ftp://x/1.jpg"}, "must be an absolute http"),
        ({"attributes": {str(i): "x" for i in range(51)}}, "at most 50"),
        ({"attributes": {"a": "x" * 1001}}, "longer than 1000"),
        ({"attributes": ["a"]}, "attributes must be an object"),
    ],
)
def test_bad_new_fields_are_refused_with_a_reason(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidProduct, match=reason):
        product(**fields)


def test_at_most_ten_additional_images_are_kept() -> None:
    links = [f"https://shop.example.com/i/{i}.jpg" for i in range(15)]
    assert len(product(additional_image_links=links).additional_image_links) == 10


def test_products_stay_hashable_with_attributes() -> None:
    one, same = product(attributes={"color": "red"}), product(attributes={"color": "red"})
    assert one == same and hash(one) == hash(same) and len({one, same}) == 1
