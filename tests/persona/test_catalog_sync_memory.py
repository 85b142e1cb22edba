"""A full catalog sync marks out of stock what the feed leaves out (persona/catalog_sync.py): it
reads the whole `catalog` topic for that. Fed real catalog records (what the topic holds), with
no broker: the part that decides what to mark is a function of the records."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator

from engine.catalog import Product
from persona.catalog_sync import out_of_stock_copies

DESCRIPTION = 5_000  # characters of a description (the most a product may hold): 5 KB a product
DISCONTINUED = 4_000  # products out of stock already: some 20 MB were they all held


def _product(item: str, availability: str) -> Product:
    url = f"https://shop.example/p/{item}"
    words = f"{item} " * (DESCRIPTION // (len(item) + 1))
    return Product(
        item, f"Lamp {item}", url, url + ".jpg", 9.0, "EUR", availability, description=words
    )


async def _records(products: list[Product]) -> AsyncIterator[tuple[bytes, bytes | None]]:
    for product in products:
        yield product.item_id.encode(), product.pack()


def test_the_products_out_of_stock_already_are_not_held_while_the_topic_is_read() -> None:
    """Every product the feed left out was decoded and held until the whole topic was read, then
    the ones out of stock already (marked by an earlier sync: a shop's discontinued products,
    which only ever grow) were dropped: each full sync held a decoded copy of them all, some
    20 MB here, gigabytes for a catalog of a million discontinued items. Only the purchasable
    ones, which are marked, are held now."""
    stale = [_product(f"old-{n}", "out_of_stock") for n in range(DISCONTINUED)]
    live = [_product("listed", "in_stock"), _product("dropped", "in_stock")]
    # a product out of stock, then back in stock (the later record wins), and the reverse
    back = [_product("back", "out_of_stock"), _product("back", "preorder")]
    gone = [_product("gone", "in_stock"), _product("gone", "out_of_stock")]
    records = live + back + stale + gone
    tracemalloc.start()
    try:
        marked = asyncio.run(out_of_stock_copies(_records(records), {"listed"}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sorted(p.item_id for p in marked) == ["back", "dropped"]
    assert all(p.availability == "out_of_stock" for p in marked)
    held_all = DISCONTINUED * DESCRIPTION
    assert peak < held_all / 10, f"peak {peak:,} bytes: the discontinued products were held"
