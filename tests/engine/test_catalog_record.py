"""`engine.catalog.catalog_record`: what one `catalog` topic record asks the catalog fold for."""

from __future__ import annotations

import json

import pytest

from engine.catalog import InvalidProduct, catalog_record

LAMP = {
    "item_id": "sku-1",
    "title": "Lamp",
    "url": "https://shop.example.com/p/1",
    "image_url": "https://shop.example.com/i/1.jpg",
    "price": 10,
    "currency": "EUR",
}


def test_a_product_is_stored_under_its_own_item_id_whatever_the_key() -> None:
    for key in (b"sku-1", b"another-key", None):
        stored, product = catalog_record(key, json.dumps(LAMP).encode())
        assert stored == b"sku-1" and product is not None and product.title == "Lamp"


def test_a_tombstone_deletes_the_item_its_key_names() -> None:
    assert catalog_record(b"sku-1", None) == (b"sku-1", None)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, None, "a catalog tombstone needs the item_id as key"),
        (b"", None, "a catalog tombstone needs the item_id as key"),
        (b"__faust\x00offset__", None, "a catalog tombstone's key must be an item id"),
        (b"\xff\xfe", None, "a catalog tombstone's key must be an item id: it is not UTF-8"),
        (b"x" * 129, None, "is not 1..128 characters"),
        (b"sku-1", b"\xc1", "undecodable product"),
        (b"sku-1", json.dumps({**LAMP, "price": "free"}).encode(), "price"),
        (b"sku-1", json.dumps({**LAMP, "url": "/relative"}).encode(), "url"),
    ],
)
def test_what_the_catalog_cannot_take_is_refused_with_the_reason(
    key: bytes | None, value: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidProduct) as refused:
        catalog_record(key, value)
    assert reason in refused.value.reason
