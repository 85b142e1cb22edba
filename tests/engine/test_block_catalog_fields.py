"""Blocks and the catalog's Google fields (issue 19 item 4): a sale price shows while it is
effective by the renderer's clock, and one item per item group."""

from __future__ import annotations

import json
import re
from typing import Any

from engine.blocks import BlockInput, BlockPolicy, Renderer, assemble, decide
from engine.catalog import Product
from engine.events import validate
from engine.profile import apply

DAY = 86_400_000
START = 1_796_083_200_000  # 2026-12-01


def product(item_id: str, **kw: Any) -> Product:
    url = f"https://shop.example/p/{item_id}"
    return Product(item_id, f"Product {item_id}", url, url + ".jpg", 10.0, "EUR", **kw)


CATALOG = {
    "sale": product("sale", sale_price=7.5, sale_starts=START, sale_ends=START + DAY),
    "plain": product("plain"),
    "red": product("red", item_group_id="mug"),
    "blue": product("blue", item_group_id="mug"),
    "green": product("green", item_group_id="mug"),
    "other": product("other", item_group_id="vase"),
}


def fallback_json(popular: list[str], clock: int | None) -> dict[str, Any]:
    renderer = Renderer()
    if clock is not None:
        renderer.clock = lambda: clock
    inp = BlockInput("recommendations", "json", "u", None, None, [], {}, popular)
    block = assemble(inp, CATALOG.get, BlockPolicy(items=6), renderer)
    return json.loads(block.content)


def prices(clock: int | None) -> dict[str, float]:
    items = fallback_json(["sale", "plain"], clock)["items"]
    return {item["item_id"]: item["price"] for item in items}


def test_the_sale_price_shows_only_while_the_sale_runs() -> None:
    assert prices(START - 1) == {"sale": 10.0, "plain": 10.0}
    assert prices(START) == {"sale": 7.5, "plain": 10.0}
    assert prices(START + DAY - 1) == {"sale": 7.5, "plain": 10.0}
    assert prices(START + DAY) == {"sale": 10.0, "plain": 10.0}
    assert prices(None) == {"sale": 10.0, "plain": 10.0}  # no clock: list prices


def test_one_item_per_item_group_in_a_block() -> None:
    items = fallback_json(["blue", "red", "plain", "green", "other"], None)["items"]
    assert [item["item_id"] for item in items] == ["blue", "plain", "other"]


def test_a_cart_reminder_keeps_every_variant_the_user_put_in_the_cart() -> None:
    events = [
        {"event_id": f"c{i}", "type": "add_to_cart", "user_id": "u", "ts": START, "item_id": item}
        for i, item in enumerate(["red", "blue", "other"])
    ]
    profile = None
    for data in events:
        profile = apply(profile, validate(data), CATALOG.get(data["item_id"]))
    inp = BlockInput("cart_reminder", "json", "u", profile, None, [], {}, [])
    items, fallback, _ = decide(inp, CATALOG.get, BlockPolicy())
    assert [p.item_id for p in items] == ["red", "blue", "other"] and not fallback


def test_block_urls_are_encoded_as_the_ad_feeds_write_them() -> None:
    """A catalog URL with spaces, non-ASCII letters, a quote or a right-to-left override goes
    into blocks percent-encoded (UTF-8), as the feeds write it (engine.feeds.feed_url): the ads
    JSON's `url` is a URL ad platforms take and matches the feed's `link`, and an e-mail href or
    src holds no raw space or invisible control a mail client cuts the link at or shows."""
    from engine.feeds import feed_url

    url = 'https://shop.example/kategorie/über uns/tür "2"\u202e?q=a b&c=%C3%BC#x y'
    image = "https://cdn.example/bilder/straße 1.jpg"
    odd = Product("odd", "Tür", url, image, 10.0, "EUR")
    catalog = {"odd": odd}
    ads = assemble(
        BlockInput("recommendations", "json", "u", None, None, [], {}, ["odd"]),
        catalog.get,
        BlockPolicy(),
        Renderer(),
    )
    item = json.loads(ads.content)["items"][0]
    assert item["url"] == feed_url(url) and item["image_url"] == feed_url(image)
    assert item["url"].isascii() and " " not in item["url"] and "%C3%BC" in item["url"]
    html = assemble(
        BlockInput("recommendations", "html", "u", None, None, [], {}, ["odd"]),
        catalog.get,
        BlockPolicy(),
        Renderer(),
    ).content
    hrefs = [h for h in re.findall(r'(?:href|src)="([^"]*)"', html) if "example" in h]
    assert hrefs and all(h.isascii() and " " not in h for h in hrefs), hrefs
    assert feed_url(url).replace("&", "&amp;") in html
