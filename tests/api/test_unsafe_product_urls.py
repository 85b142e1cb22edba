"""Stored products whose `url` or `image_url` holds userinfo (`https://shop@evil.example/p`:
it reads as the shop and goes to evil.example) are refused at catalog intake
(engine/catalog.userinfo_problem), but a catalog stored by an older version can hold them: they
are left out of e-mail and JSON blocks and of the ad feeds, as products that cannot be shown
are, and each is logged once and counted so the shop learns of it."""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import UNSAFE_PRODUCTS, Product
from engine.feeds import FEEDS
from models.registry import ModelSet

SECRET = "unsafe-urls-kkkkkkkkkkkkkkkk"
KEYS = f"all:{SECRET}:content:read,feeds:read"
AUTH = {"Authorization": f"Bearer {SECRET}"}
POPULAR = ModelSet.default().recs.popular


def _product(item: str, url: str, image: str) -> Product:
    return Product(item, f"Product {item}", url, image, 2.0, "GBP", "in_stock")


def _state(tag: str) -> tuple[MemoryState, dict[str, str]]:
    """The best-sellers in the catalog; the first two with userinfo in their url or image_url
    (returned: item id -> which), the ids made unique by `tag` where the reports remember them."""
    state = MemoryState()
    unsafe: dict[str, str] = {}
    for n, item in enumerate(POPULAR[:20]):
        url = f"https://shop.example/p/{item}?t={tag}"
        image = f"https://shop.example/i/{item}.jpg"
        if n == 0:
            url, unsafe[item] = f"https://shop.example@evil.example/p/{item}?t={tag}", "url"
        elif n == 1:
            image, unsafe[item] = f"https://shop@evil.example/i/{item}.jpg?t={tag}", "image_url"
        state.put_product(_product(item, url, image))
    return state, unsafe


def _client(state: MemoryState) -> TestClient:
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None))
    return TestClient(TestServer(app))


@pytest.fixture(autouse=True)
def _forget_reports() -> None:
    UNSAFE_PRODUCTS.reported.clear()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines() -> Iterator[Lines]:
    """What persona.catalog logs (whatever the `persona` logger's handlers and propagation)."""
    handler, logger = Lines(), logging.getLogger("persona.catalog")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("fmt", ["html", "json"])
async def test_blocks_leave_out_products_with_userinfo(fmt: str, lines: Lines) -> None:
    state, unsafe = _state(uuid.uuid4().hex)
    before = UNSAFE_PRODUCTS.count
    async with _client(state) as client:
        r = await client.get(f"/v1/users/nobody/blocks/recommendations?format={fmt}", headers=AUTH)
        assert r.status == 200
        text = await r.text()
        assert "evil.example" not in text
        for item in unsafe:
            assert item not in text
        if fmt == "json":
            assert len(json.loads(text)["items"]) == 6  # filled from the next best-sellers
        batch = {"block": "recommendations", "format": fmt, "user_ids": ["a", "b"]}
        r = await client.post("/v1/blocks:batch", json=batch, headers=AUTH)
        assert "evil.example" not in await r.text()
        metrics = await (await client.get("/metrics")).text()
    assert UNSAFE_PRODUCTS.count - before == 2  # once per product, however often it is skipped
    logged = [rec for rec in lines.records if "user name before '@'" in rec.getMessage()]
    assert len(logged) == 2 and all(rec.levelno == logging.WARNING for rec in logged)
    for item, field in unsafe.items():
        assert any(f"{item!r}" in rec.getMessage() and field in rec.getMessage() for rec in logged)
    assert not any("evil" in rec.getMessage() for rec in logged)  # nor the userinfo
    assert "persona_catalog_unsafe_urls_total" in metrics


@pytest.mark.parametrize("name", FEEDS)
async def test_feeds_leave_out_products_with_userinfo(name: str) -> None:
    state, unsafe = _state(uuid.uuid4().hex)
    before = UNSAFE_PRODUCTS.count
    async with _client(state) as client:
        for _ in range(2):
            r = await client.get(f"/v1/feeds/{name}", headers=AUTH)
            assert r.status == 200
            text = await r.text()
            assert "evil.example" not in text
            for item in unsafe:
                assert item not in text
            assert POPULAR[2] in text and POPULAR[19] in text  # the others are all there
    assert UNSAFE_PRODUCTS.count - before == 2


def test_a_meta_feed_keeps_its_rows_whole() -> None:
    """The feed without them is still one row per other product (csv parses)."""
    from engine.catalog import shown_safely
    from engine.feeds import stream

    state, unsafe = _state(uuid.uuid4().hex)
    text = "".join(stream("meta.csv", (p for p in state.products() if shown_safely(p))))
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == 1 + 20 - len(unsafe)
