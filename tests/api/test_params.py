"""Block parameters over HTTP (issue 18 item 1): on block GETs, in POST /v1/blocks:batch and in
POST /v1/render; every filter really filters, `n` counts, `exclude` excludes, `context_item`
leans the recommendations on its neighbours, bad or unknown parameters are 400 problems naming
them, and each parameter set is cached apart, in a bounded cache of its own."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.testing import MemoryState
from engine.blocks import BlockCache, BlockPolicy, Renderer
from engine.catalog import Product
from engine.events import validate
from models.registry import ModelSet

T0 = 1_300_000_000_000
AUTH = {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}
MODELS = ModelSet.default()
CONTEXT = "22138"  # an item of the default model with strong neighbours (22617, 22139, ...)
SEEN = "20725"  # what u1 looked at: its neighbours (20728, 22383, ...) lead u1's recommendations
NEIGHBOURS = [i for i, _w in MODELS.recs.neighbours_of(CONTEXT)]


def _product(item: str, n: int) -> Product:
    return Product(
        item, f"Product {item}", f"https://shop.example/p/{item}",
        f"https://shop.example/i/{item}.jpg", float(1 + n % 40), "GBP",
        category=("Garden" if n % 2 else "Home > Kitchen"), brand=("Acme" if n % 3 else "Other"),
    )  # fmt: skip


def catalog() -> list[str]:
    seen_neighbours = [i for i, _w in MODELS.recs.neighbours_of(SEEN)]
    return list(dict.fromkeys([*MODELS.recs.popular[:60], *NEIGHBOURS, *seen_neighbours]))


@pytest.fixture
def state() -> MemoryState:
    s = MemoryState()
    for n, item in enumerate(catalog()):
        s.put_product(_product(item, n))
    s.apply(validate({"event_id": "e1", "type": "product_view", "user_id": "u1", "ts": T0,
                      "item_id": SEEN}))  # fmt: skip
    return s


@pytest.fixture
def content(state: MemoryState) -> ContentService:
    return ContentService(state, MODELS, Renderer(), BlockPolicy())


@pytest.fixture
async def client(content: ContentService) -> AsyncIterator[TestClient]:
    keys = KeyRing.from_settings("all:s3cret-kkkkkkkkkkkkkkkkk:content:read", None)
    async with TestClient(TestServer(create_app(content, keys))) as c:
        yield c


async def block(
    client: TestClient, query: str, user: str = "u1", name: str = "recommendations"
) -> dict[str, Any]:
    r = await client.get(f"/v1/users/{user}/blocks/{name}?format=json&{query}", headers=AUTH)
    assert r.status == 200, await r.text()
    body: dict[str, Any] = json.loads(await r.text())
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in body["items"]]


async def test_no_parameters_is_the_plain_block(client: TestClient) -> None:
    plain = await client.get("/v1/users/u1/blocks/recommendations?format=json", headers=AUTH)
    body = json.loads(await plain.text())
    assert len(body["items"]) == BlockPolicy().items and body["fallback"] is False


@pytest.mark.parametrize("user", ["u1", "nobody"])  # personal, and the fallback
@pytest.mark.parametrize("n", [1, 3, 13, 50])
async def test_n_sets_the_item_count(client: TestClient, user: str, n: int) -> None:
    body = await block(client, f"n={n}", user)
    assert len(body["items"]) == n and len(set(ids(body))) == n
    assert body["fallback"] is (user == "nobody")


async def test_category_brand_and_price_filters_filter(
    client: TestClient, state: MemoryState
) -> None:
    for user in ("u1", "nobody"):
        plain = await block(client, "n=20", user)
        assert {state.catalog[i].category for i in ids(plain)} == {"Garden", "Home > Kitchen"}
        garden = await block(client, "n=20&category=garden", user)
        home = await block(client, "n=20&category=Home", user)  # a path prefix matches
        assert ids(garden) and {state.catalog[i].category for i in ids(garden)} == {"Garden"}
        assert ids(home) and {state.catalog[i].category for i in ids(home)} == {"Home > Kitchen"}
        other = await block(client, "n=20&brand=OTHER&min_price=5&max_price=20", user)
        found = [state.catalog[i] for i in ids(other)]
        assert found and all(p.brand == "Other" and 5 <= p.price <= 20 for p in found)
        unfiltered = [state.catalog[i] for i in ids(plain)]
        assert any(p.brand == "Acme" or not 5 <= p.price <= 20 for p in unfiltered)


async def test_exclude_excludes_and_keeps_the_count(client: TestClient) -> None:
    for user in ("u1", "nobody"):
        first = ids(await block(client, "", user))
        shown = ids(await block(client, f"exclude={first[0]},{first[2]}", user))
        assert len(shown) == len(first) and not {first[0], first[2]} & set(shown)
        assert shown[:2] == [first[1], first[3]]  # the rest keep their order


async def test_context_item_leans_on_its_neighbours(client: TestClient) -> None:
    plain = ids(await block(client, "n=10"))
    leaning = ids(await block(client, f"n=10&context_item={CONTEXT}"))
    near = set(NEIGHBOURS[:20])
    assert CONTEXT not in leaning
    assert len(near & set(leaning)) > len(near & set(plain))
    assert leaning[0] in near  # the context item is the newest history item


async def test_similar_items_block_for_a_user(client: TestClient, state: MemoryState) -> None:
    body = await block(client, f"context_item={CONTEXT}", name="similar_items")
    assert body["block"] == "similar_items" and body["fallback"] is False
    assert CONTEXT not in ids(body) and set(ids(body)) <= set(NEIGHBOURS)
    r = await client.get("/v1/users/u1/blocks/similar_items", headers=AUTH)
    problem = await r.json(content_type=None)
    assert r.status == 400 and problem["parameter"] == "context_item"


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("n=0", "n"),
        ("n=51", "n"),
        ("n=two", "n"),
        ("min_price=-3", "min_price"),
        ("min_price=9&max_price=3", "max_price"),
        ("category=", "category"),
        ("exclude=a,,b", "exclude"),
        ("context_item=" + "x" * 129, "context_item"),
        ("locale=not_a_tag", "locale"),
        ("sort=price", "sort"),
        ("n=2&n=3", "n"),
        ("format=json&format=html", "format"),  # the first was taken silently
        ("format=json&n=2&format=json", "format"),
    ],
)
async def test_bad_parameters_are_400_problems_naming_them(
    client: TestClient, query: str, name: str
) -> None:
    r = await client.get(f"/v1/users/u1/blocks/recommendations?{query}", headers=AUTH)
    assert r.status == 400 and r.headers["Content-Type"].startswith("application/problem+json")
    problem = await r.json(content_type=None)
    assert problem["parameter"] == name and name in problem["detail"]


async def test_parameter_sets_are_cached_apart(client: TestClient, content: ContentService) -> None:
    two, three = await block(client, "n=2"), await block(client, "n=3")
    assert len(two["items"]) == 2 and len(three["items"]) == 3
    assert len(content.param_cache) == 2 and len(content.cache) == 0  # plain blocks untouched
    hits = content.param_cache.hits
    assert await block(client, "n=2") == two and content.param_cache.hits == hits + 1
    en = await client.get(
        f"/v1/users/u1/blocks/similar_items?context_item={CONTEXT}&locale=en-gb", headers=AUTH
    )
    de = await client.get(
        f"/v1/users/u1/blocks/similar_items?context_item={CONTEXT}&locale=de", headers=AUTH
    )
    assert 'lang="en-GB"' in await en.text() and 'lang="de"' in await de.text()
    assert en.headers["ETag"] != de.headers["ETag"] and len(content.param_cache) == 4


async def test_the_parameter_cache_is_bounded(client: TestClient, content: ContentService) -> None:
    await client.get("/v1/users/u1/blocks/recommendations", headers=AUTH)
    content.param_cache = BlockCache(max_entries=3)
    for n in range(1, 11):
        assert len((await block(client, f"n={n}"))["items"]) == n
    assert len(content.param_cache) == 3 and content.param_cache.evictions == 7
    assert len(content.cache) == 1  # the plain block is still cached


async def test_batch_takes_the_parameters_as_fields(client: TestClient) -> None:
    body = {"block": "recommendations", "format": "json", "user_ids": ["u1", "nobody"],
            "n": 2, "category": "Garden", "exclude": ["nothing"]}  # fmt: skip
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    results = (await r.json())["results"]
    assert r.status == 200 and set(results) == {"u1", "nobody"}
    for entry in results.values():
        assert len(json.loads(entry["content"])["items"]) == 2
    similar = {"block": "similar_items", "format": "json", "user_ids": ["u1"],
               "context_item": CONTEXT, "exclude": NEIGHBOURS[:1]}  # fmt: skip
    r = await client.post("/v1/blocks:batch", json=similar, headers=AUTH)
    shown = ids(json.loads((await r.json())["results"]["u1"]["content"]))
    assert shown and NEIGHBOURS[0] not in shown and CONTEXT not in shown


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": "2"}, "n"),
        ({"exclude": [3]}, "exclude"),
        ({"colour": "red"}, "colour"),
        ({"block": "similar_items"}, "context_item"),
    ],
)
async def test_batch_refuses_bad_parameters(
    client: TestClient, fields: dict[str, Any], name: str
) -> None:
    body = {"block": "recommendations", "user_ids": ["u1"], **fields}
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    assert r.status == 400 and (await r.json(content_type=None))["parameter"] == name


async def test_render_applies_the_parameters_to_every_block(client: TestClient) -> None:
    template = "{{ blocks.recommendations }}|{{ blocks.similar_items }}"
    body = {"template": template, "user_ids": ["u1"], "n": 2, "context_item": CONTEXT,
            "locale": "de-AT"}  # fmt: skip
    r = await client.post("/v1/render", json=body, headers=AUTH)
    result = (await r.json())["results"]["u1"]
    recs, similar = result["content"].split("|")
    assert len(re.findall(r"<img ", recs)) == 2 and len(re.findall(r"<img ", similar)) == 2
    assert 'lang="de-AT"' in similar and result["fallback_blocks"] == []
    r = await client.post("/v1/render", json={**body, "n": 99}, headers=AUTH)
    assert r.status == 400 and (await r.json(content_type=None))["parameter"] == "n"


@pytest.mark.parametrize("front", [False, True], ids=["middleware", "front"])
@pytest.mark.parametrize(
    "path",
    [
        "/v1/users/u1/blocks/recommendations?format=text",
        "/v1/users/u1/blocks/recommendations?format=text&n=2",
        f"/v1/items/{CONTEXT}/similar?format=text",
    ],
)
async def test_a_bad_format_names_the_parameter(
    content: ContentService, path: str, front: bool
) -> None:
    """`format=text` was a 400 without `parameter`, which every other bad parameter carries."""
    from tests.api.test_hot import HotTestServer

    keys = KeyRing.from_settings("all:s3cret-kkkkkkkkkkkkkkkkk:content:read", None)
    app = create_app(content, keys)
    server = HotTestServer(app) if front else TestServer(app)
    async with TestClient(server) as c:
        r = await c.get(path, headers=AUTH)
        assert r.status == 400 and r.headers["Content-Type"].startswith("application/problem+json")
        problem = await r.json(content_type=None)
        assert problem["parameter"] == "format" and "html, json" in problem["detail"]


async def test_batch_names_a_bad_format(client: TestClient) -> None:
    body = {"block": "recommendations", "user_ids": ["u1"], "format": "text"}
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    problem = await r.json(content_type=None)
    assert r.status == 400 and problem["parameter"] == "format", problem
