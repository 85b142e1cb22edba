"""GET/PUT /v1/rules (api/rules.py): the rules:admin scope, versions numbered by the server, a
stale edit refused, hostile documents refused with the place of the problem, every change
audited, and the rules served with the models (the in-memory registry folds the same record a
worker folds from the `models` topic)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.models_routes import ADMIN
from api.testing import MemoryRegistry, MemoryState
from engine.blocks import BlockPolicy, Renderer
from models.registry import ModelSet

RULES_KEY = "rules-admin-kkkkkkkkkkkkkkk"
MODELS_KEY = "models-admin-kkkkkkkkkkkkkk"
KEYS = f"merch:{RULES_KEY}:rules:admin;ds:{MODELS_KEY}:models:admin,content:read"
RULE = {"id": "no-candles", "action": "exclude", "match": {"category": "Candles"}}


def bearer(secret: str = RULES_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def setup() -> AsyncIterator[tuple[TestClient, ContentService]]:
    state = MemoryState()
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None))
    app[ADMIN] = MemoryRegistry(content, state)
    async with TestClient(TestServer(app)) as client:
        yield client, content


async def test_put_numbers_versions_and_serves_the_rules(
    setup: tuple[TestClient, ContentService],
) -> None:
    client, content = setup
    r = await client.get("/v1/rules", headers=bearer())
    assert r.status == 200 and await r.json() == {"version": "0", "rules": []}
    assert r.headers["ETag"] == '"0"'
    stamp = content.models.stamp()
    r = await client.put("/v1/rules", json={"version": "99", "rules": [RULE]}, headers=bearer())
    body = await r.json()
    assert r.status == 200 and body["version"] == "1" and r.headers["ETag"] == '"1"'
    assert body["rules"] == [{**RULE, "match": {"category": "candles"}}]
    assert content.models.rules.version == "1" and len(content.models.rules.rules) == 1
    assert content.models.stamp() != stamp  # cached blocks are made again
    r = await client.put("/v1/rules", json={"rules": []}, headers=bearer())
    assert (await r.json()) == {"version": "2", "rules": []}
    assert (await (await client.get("/v1/rules", headers=bearer())).json())["version"] == "2"


async def test_a_stale_edit_is_refused(setup: tuple[TestClient, ContentService]) -> None:
    client, _ = setup
    first = await client.put("/v1/rules", json={"rules": [RULE]}, headers=bearer())
    etag = first.headers["ETag"]
    r = await client.put("/v1/rules", json={"rules": []}, headers={**bearer(), "If-Match": etag})
    assert r.status == 200
    stale = await client.put(
        "/v1/rules", json={"rules": [RULE]}, headers={**bearer(), "If-Match": etag}
    )
    assert stale.status == 412 and "version '2'" in (await stale.json())["detail"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[", "expected a JSON object"),
        (b"[]", "must be an object"),
        (json.dumps({"rules": [{**RULE, "action": "nuke"}]}).encode(), "rules[0].action"),
        (json.dumps({"rules": [RULE, RULE]}).encode(), "used twice"),
        (b"\xff\xfe", "expected a JSON object"),
    ],
)
async def test_bad_documents_are_400_problems_and_change_nothing(
    setup: tuple[TestClient, ContentService], body: bytes, says: str
) -> None:
    client, content = setup
    r = await client.put("/v1/rules", data=body, headers=bearer())
    problem: dict[str, Any] = await r.json(content_type=None)
    assert r.status == 400 and says in problem["detail"]
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert content.models.rules.version == "0"


async def test_a_huge_body_is_413(setup: tuple[TestClient, ContentService]) -> None:
    client, _ = setup
    huge = b'{"rules": [' + b" " * (600 * 1024) + b"]}"
    r = await client.put("/v1/rules", data=huge, headers=bearer())
    assert r.status == 413


async def test_only_the_rules_scope_reads_or_changes_rules(
    setup: tuple[TestClient, ContentService],
) -> None:
    client, _ = setup
    for method in ("GET", "PUT"):
        r = await client.request(
            method, "/v1/rules", json={"rules": []}, headers=bearer(MODELS_KEY)
        )
        assert r.status == 403 and "rules:admin" in (await r.json(content_type=None))["detail"]
        assert (await client.request(method, "/v1/rules")).status == 401


async def test_every_change_is_audited(
    setup: tuple[TestClient, ContentService], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = setup
    with caplog.at_level(logging.INFO, "persona.audit"):
        await client.put("/v1/rules", json={"rules": [RULE]}, headers=bearer())
        await client.put("/v1/rules", data=b"[", headers=bearer())
        await client.get("/v1/rules", headers=bearer())  # a read: not audited
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "persona.audit"]
    changes = [(r["action"], r["outcome"], r["status"], r.get("version")) for r in records]
    assert changes == [("rules_change", "ok", 200, "1"), ("rules_change", "failed", 400, None)]
    assert records[0]["key"] == "merch" and records[0]["rules"] == 1


# -- blocks apply the rules -----------------------------------------------------------------

BLOCKS_KEY = "blocks-reader-kkkkkkkkkkkkk"


@pytest.fixture
async def shop() -> AsyncIterator[tuple[TestClient, MemoryState]]:
    """A shop with a model whose neighbours of `a` are a2, b, b2, c, c2 and a user who viewed
    `a`; products in two categories, one out of stock."""
    from api.testing import MemoryState as State
    from engine.catalog import Product
    from engine.events import validate
    from models.churn import train_churn
    from models.recs import train_recs
    from tests.models.synthetic import basket_events, churn_events

    state = State()
    for item, category, availability in [
        ("a", "Home", "in_stock"), ("a2", "Home > Candles", "in_stock"),
        ("b", "Garden", "in_stock"), ("b2", "Garden", "in_stock"),
        ("c", "Home", "in_stock"), ("c2", "Home", "in_stock"),
        ("pop", "Home", "in_stock"), ("gone", "Home", "out_of_stock"),
        ("promo", "Garden", "in_stock"),
    ]:  # fmt: skip
        url = f"https://shop.example.com/{item}"
        state.put_product(
            Product(item, item, url, url + ".jpg", 5.0, "GBP", availability, category)
        )
    state.popular_items = ["pop", "b", "c", "promo"]
    models = ModelSet(train_churn(churn_events()), train_recs(basket_events(), k=5))
    content = ContentService(state, models, Renderer(), BlockPolicy(items=3))
    keys = f"merch:{RULES_KEY}:rules:admin;send:{BLOCKS_KEY}:content:read"
    app = create_app(content, KeyRing.from_settings(keys, None))
    app[ADMIN] = MemoryRegistry(content, state)
    view = {"event_id": "v1", "type": "product_view", "user_id": "u", "item_id": "a"}
    state.apply(validate({**view, "ts": state.wall.now_ms() - 1000}))
    async with TestClient(TestServer(app)) as client:
        yield client, state


async def block(client: TestClient, user: str = "u") -> dict[str, Any]:
    r = await client.get(
        f"/v1/users/{user}/blocks/recommendations?format=json",
        headers={"Authorization": f"Bearer {BLOCKS_KEY}"},
    )
    assert r.status == 200
    body: dict[str, Any] = await r.json()
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in body["items"]]


async def put(client: TestClient, *rules: dict[str, Any]) -> None:
    r = await client.put("/v1/rules", json={"rules": list(rules)}, headers=bearer())
    assert r.status == 200, await r.text()


async def test_rules_change_a_cached_block_at_once(shop: tuple[TestClient, MemoryState]) -> None:
    client, _ = shop
    before = ids(await block(client))
    assert len(before) == 3 and "a" not in before
    await put(client, {"id": "no-home", "action": "exclude", "match": {"category": "Home"}})
    after = ids(await block(client))
    assert after and not {"a2", "c", "c2", "pop"} & set(after)  # Home and its sub-categories
    await put(
        client, {"id": "pin", "action": "pin", "match": {"item_ids": ["promo"]}, "position": 1}
    )
    assert ids(await block(client))[0] == "promo"
    await put(client)  # no rules: the model's order again
    assert ids(await block(client)) == before


async def test_rules_never_bring_back_the_out_of_stock_or_the_users_own(
    shop: tuple[TestClient, MemoryState],
) -> None:
    client, _ = shop
    before = ids(await block(client))
    await put(
        client,
        {"id": "gone", "action": "pin", "match": {"item_ids": ["gone"]}, "position": 1},
        {"id": "own", "action": "pin", "match": {"item_ids": ["a"]}, "position": 1},
    )
    assert ids(await block(client)) == before  # "a" is the item the user viewed


async def test_fallback_blocks_follow_the_rules_too(shop: tuple[TestClient, MemoryState]) -> None:
    client, _ = shop
    assert ids(await block(client, "stranger")) == ["pop", "b", "c"]
    await put(client, {"id": "garden", "action": "filter", "match": {"category": "Garden"}})
    fallback = await block(client, "stranger")
    assert fallback["fallback"] is True and ids(fallback)[:2] == ["b", "promo"]
    assert set(ids(fallback)) <= {"b", "b2", "promo"}  # Garden only


async def test_a_rule_in_its_time_window_only(shop: tuple[TestClient, MemoryState]) -> None:
    client, state = shop
    now = state.clock.now_ms()
    rule = {"id": "later", "action": "pin", "match": {"item_ids": ["promo"]}, "position": 1}
    await put(client, {**rule, "starts": now + 60_000, "ends": now + 120_000})
    assert ids(await block(client))[0] != "promo"
    from engine.events import validate

    state.wall.set(now + 61_000)  # the stream's clock moves with any later event
    tick = {"event_id": "t", "type": "page_view", "user_id": "other", "ts": now + 61_000}
    state.apply(validate(tick))
    assert ids(await block(client))[0] == "promo"


async def test_the_preview_names_the_rules_that_changed_a_block(
    shop: tuple[TestClient, MemoryState],
) -> None:
    client, _ = shop
    await put(
        client,
        {"id": "pin", "action": "pin", "match": {"item_ids": ["promo"]}, "position": 1},
        {"id": "idle", "action": "exclude", "match": {"item_ids": ["nothing-shown"]}},
    )
    r = await client.get("/v1/users/u/explain", headers={"Authorization": f"Bearer {BLOCKS_KEY}"})
    blocks = (await r.json())["blocks"]
    assert blocks["recommendations"]["rules"] == ["pin"]
    assert blocks["cart_reminder"]["fallback"] is True  # an empty cart: the best-sellers,
    assert blocks["cart_reminder"]["rules"] == ["pin"]  # which the rules re-rank too
