"""GET /v1/items/{item_id}/similar (issue 18 item 2): the item's neighbours in the active model,
never the item itself, only items in stock; 404 for an unknown item; html and json; `n` and the
filters; ETag."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from tests.api.test_params import AUTH, CONTEXT, MODELS, NEIGHBOURS, _product, catalog

ROUTE = f"/v1/items/{CONTEXT}/similar"


@pytest.fixture
def state() -> MemoryState:
    s = MemoryState()
    for n, item in enumerate(catalog()):
        s.put_product(_product(item, n))
    return s


@pytest.fixture
def content(state: MemoryState) -> ContentService:
    return ContentService(state, MODELS, Renderer(), BlockPolicy())


@pytest.fixture
async def client(content: ContentService) -> AsyncIterator[TestClient]:
    keys = KeyRing.from_settings("all:s3cret-kkkkkkkkkkkkkkkkk:content:read", None)
    async with TestClient(TestServer(create_app(content, keys))) as c:
        yield c


async def similar(client: TestClient, query: str = "", item: str = CONTEXT) -> list[str]:
    r = await client.get(f"/v1/items/{item}/similar?format=json&{query}", headers=AUTH)
    assert r.status == 200, await r.text()
    body = json.loads(await r.text())
    assert body["block"] == "similar_items" and body["user_id"] == ""
    return [i["item_id"] for i in body["items"]]


async def test_the_neighbours_in_the_models_order_never_the_item(client: TestClient) -> None:
    shown = await similar(client)
    assert shown == NEIGHBOURS[: BlockPolicy().items] and CONTEXT not in shown
    for n in (1, 12):
        assert await similar(client, f"n={n}") == NEIGHBOURS[:n]


async def test_out_of_stock_items_are_left_out(client: TestClient, state: MemoryState) -> None:
    from dataclasses import replace

    gone = NEIGHBOURS[1]
    state.put_product(replace(state.catalog[gone], availability="out_of_stock"))
    shown = await similar(client)
    assert gone not in shown and shown[0] == NEIGHBOURS[0] and len(shown) == BlockPolicy().items


async def test_an_item_that_points_back_is_not_shown(client: TestClient) -> None:
    back = NEIGHBOURS[0]  # CONTEXT is among its own neighbours' neighbours
    shown = await similar(client, item=back)
    assert back not in shown and CONTEXT in shown


async def test_filters_and_exclusions(client: TestClient, state: MemoryState) -> None:
    garden = await similar(client, "category=Garden&n=10")
    assert garden and all(state.catalog[i].category == "Garden" for i in garden)
    shown = await similar(client, f"exclude={NEIGHBOURS[0]}")
    assert NEIGHBOURS[0] not in shown and shown[0] == NEIGHBOURS[1]


async def test_html_block_and_etag(client: TestClient) -> None:
    r = await client.get(ROUTE, headers=AUTH)
    html = await r.text()
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "More like this" in html and "X-Persona-Fallback" not in r.headers
    assert html.count("<img ") == BlockPolicy().items
    assert f'/p/{CONTEXT}"' not in html and f'/p/{NEIGHBOURS[0]}"' in html
    again = await client.get(ROUTE, headers={**AUTH, "If-None-Match": r.headers["ETag"]})
    assert again.status == 304


async def test_unknown_item_is_a_404_problem(client: TestClient) -> None:
    r = await client.get("/v1/items/no-such-item/similar", headers=AUTH)
    assert r.status == 404 and r.headers["Content-Type"].startswith("application/problem+json")
    assert (await r.json(content_type=None))["title"] == "Unknown item"


async def test_an_item_without_neighbours_gets_the_best_sellers(
    client: TestClient, state: MemoryState
) -> None:
    state.put_product(_product("brand-new", 1))  # in the catalog, unknown to the model
    r = await client.get("/v1/items/brand-new/similar?format=json", headers=AUTH)
    body = json.loads(await r.text())
    assert r.headers["X-Persona-Fallback"] == "1" and body["fallback"] is True
    assert body["items"] and "brand-new" not in [i["item_id"] for i in body["items"]]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("n=0", "n"),
        ("context_item=x", "context_item"),
        ("colour=red", "colour"),
        ("format=json&format=html", "format"),  # the first was taken silently
    ],
)
async def test_bad_parameters_are_400(client: TestClient, query: str, name: str) -> None:
    r = await client.get(f"{ROUTE}?{query}", headers=AUTH)
    assert r.status == 400 and (await r.json(content_type=None))["parameter"] == name
    r = await client.get(f"{ROUTE}?format=xml", headers=AUTH)
    assert r.status == 400


async def test_it_needs_a_key(client: TestClient) -> None:
    assert (await client.get(ROUTE)).status == 401
