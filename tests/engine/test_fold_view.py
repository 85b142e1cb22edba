"""`Product.fold_view`: the profile fold gives the same profile with a product's fold view as
with the whole product (the worker keeps only views for its fold, streams/read_side.py)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.catalog import Product
from engine.events import validate
from engine.profile import Profile, apply

T0 = 1_700_000_000_000

WHOLE = Product(
    "sku-1",
    "Lamp",
    "https://shop.test/p/1",
    "https://shop.test/i/1.jpg",
    19.5,
    "EUR",
    availability="preorder",
    category="Lighting",
    brand="Lumen",
    description="A lamp",
    sale_price=15.0,
    sale_starts=T0 - 1000,
    sale_ends=T0 + 10**9,
    item_group_id="g1",
    gtin="4006381333931",
    mpn="L-1",
    condition="refurbished",
    availability_date=T0 + 5000,
    additional_image_links=("https://shop.test/i/1b.jpg",),
    attributes={"colour": "red"},
    prices={"GBP": 17.0},
)


def _event(n: int, etype: str, **extra: Any) -> Any:
    return validate(
        {"event_id": f"e{n}", "user_id": "ann", "type": etype, "item_id": "sku-1", "ts": T0 + n}
        | extra
    )


HISTORIES = {
    "views and carts": [("product_view", {}), ("add_to_cart", {"quantity": 2})],
    "a purchase at the catalog price": [("add_to_cart", {}), ("purchase", {"quantity": 3})],
    "a purchase with its own price": [("purchase", {"price": 12.0, "currency": "GBP"})],
    "a purchase and its return": [
        ("purchase", {"props": {"order_id": "o1"}}),
        ("purchase", {"props": {"order_id": "o1", "returned": True}}),
    ],
    "props that name their own category": [
        ("product_view", {"props": {"category": "Gifts", "brand": "Other"}})
    ],
    "a removal": [("add_to_cart", {"quantity": 2}), ("remove_from_cart", {})],
}


@pytest.mark.parametrize("history", HISTORIES.values(), ids=HISTORIES.keys())
def test_the_fold_gives_the_same_profile_with_the_view(history: list[tuple[str, Any]]) -> None:
    whole: Profile | None = None
    viewed: Profile | None = None
    view = WHOLE.fold_view()
    for n, (etype, extra) in enumerate(history):
        event = _event(n, etype, **extra)
        whole = apply(whole, event, WHOLE)
        viewed = apply(viewed, event, view)
    assert whole is not None and viewed is not None
    assert viewed == whole
    assert viewed.pack() == whole.pack()


def test_the_view_keeps_what_the_fold_reads_and_nothing_else() -> None:
    view = WHOLE.fold_view()
    kept = (view.item_id, view.price, view.currency, view.category, view.brand)
    assert kept == ("sku-1", 19.5, "EUR", "Lighting", "Lumen")
    assert (view.title, view.url, view.image_url, view.description) == ("", "", "", "")
    assert view.sale_price is None and view.attributes == {} and view.prices == {}
    assert view.additional_image_links == () and view.gtin == ""
