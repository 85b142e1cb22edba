"""GET /v1/feeds/google.xml names the shop's channel from the settings and shows a sale by the
wall clock (issue 19 item 5)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from models.registry import ModelSet

KEYS = "feeds:feedsecret-kkkkkkkkkkkkk:feeds:read"
AUTH = {"Authorization": "Bearer feedsecret-kkkkkkkkkkkkk"}
G = "{http://base.google.com/ns/1.0}"


def lamp(item_id: str, sale_ends: int) -> Product:
    url = f"https://lamps.example.org/p/{item_id}"
    return Product(
        item_id, "Lamp", url, url + ".jpg", 20.0, "EUR", sale_price=15.0, sale_ends=sale_ends
    )


async def channel_and_sales(options: ServingOptions | None) -> tuple[str, str, dict[str, str]]:
    state = MemoryState()
    now = int(time.time() * 1000)
    state.put_product(lamp("running", now + 3_600_000))
    state.put_product(lamp("ended", now - 3_600_000))
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None), options)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/feeds/google.xml", headers=AUTH)
        assert response.status == 200
        root = ET.fromstring(await response.text())
    sales = {
        i.findtext(G + "id") or "": i.findtext(G + "sale_price") or "" for i in root.iter("item")
    }
    return root.findtext("./channel/title") or "", root.findtext("./channel/link") or "", sales


async def test_the_channel_comes_from_the_settings() -> None:
    options = ServingOptions(feed_title="Lamp Shop", feed_link="https://www.lamps.example.org/")
    title, link, sales = await channel_and_sales(options)
    assert (title, link) == ("Lamp Shop", "https://www.lamps.example.org/")
    assert sales == {"running": "15.00 EUR", "ended": ""}


async def test_without_a_link_setting_the_shop_s_origin_is_the_link() -> None:
    _, link, _ = await channel_and_sales(None)
    assert link == "https://lamps.example.org/"


async def test_a_first_product_whose_url_has_no_host_to_read_leaves_the_feed_whole() -> None:
    """Without PERSONA_FEED_LINK the channel's link is the origin of the first product's URL,
    read with urlsplit, which raises ValueError for a host opening an IPv6 bracket it never
    closes (`https://[shop/p`: intake takes it, any http(s) URL without userinfo is taken). The
    error came out of the stream after the 200 was sent: the connection was cut, and every ad
    platform got an empty, unparseable google.xml for one product's typo. The channel's link is
    empty for such a URL; every product is listed (the URL percent-encoded, as in every feed)."""
    state = MemoryState()
    state.put_product(
        Product("typo", "Lamp", "https://[shop/p", "https://i.example/t.jpg", 2.0, "EUR")
    )
    state.put_product(lamp("fine", int(time.time() * 1000) + 3_600_000))
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/feeds/google.xml", headers=AUTH)
        assert response.status == 200
        root = ET.fromstring(await response.read())  # the whole document, well-formed
    assert sorted(i.findtext(G + "id") or "" for i in root.iter("item")) == ["fine", "typo"]
    assert root.findtext("./channel/link") == ""
