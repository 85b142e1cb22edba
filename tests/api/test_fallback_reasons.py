"""Why a block is the fallback, told to senders: `X-Persona-Fallback-Reason` on block GETs (every
server path, 200 and 304, cached or not), `fallback_reason` in each fallback entry of a batch
answer (JSON and msgpack; `deadline` for the users a deadline cut), from the fixed vocabulary
`engine.blocks.REASONS` that docs/serving.md explains. Before, the reason reached only the
preview UI and /explain."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.hot import hot_middleware
from api.testing import MemoryState
from engine.blocks import REASONS, BlockPolicy, Renderer
from engine.catalog import Product
from engine.events import validate
from models.registry import ModelSet
from tests.api.test_batch import slow_chunks
from tests.api.test_hot import HotTestServer

T0 = 1_300_000_000_000
SECRET = "reason-secret-kkkkkkkkkkkkkk"
AUTH = {"Authorization": f"Bearer {SECRET}"}
HEADER = "X-Persona-Fallback-Reason"
ITEMS = ModelSet.default().recs.popular[:50]
SHOPPERS = [f"s{n}" for n in range(8)]  # viewed and carted items
VIEWER = "viewer"  # viewed one item, carted nothing


@pytest.fixture
def content() -> ContentService:
    state = MemoryState()
    for item in ITEMS:
        url = f"https://shop.example.com/p/{item}"
        state.put_product(Product(item, f"Product {item}", url, url + ".jpg", 2.5, "GBP"))
    for n, user in enumerate(SHOPPERS):
        for k, kind in enumerate(("product_view", "add_to_cart")):
            event = {"event_id": f"{user}-{k}", "type": kind, "user_id": user, "ts": T0 + n}
            state.apply(validate({**event, "item_id": ITEMS[(n * 3 + k) % len(ITEMS)]}))
    view = {"event_id": "v", "type": "product_view", "user_id": VIEWER, "item_id": ITEMS[0]}
    state.apply(validate({**view, "ts": T0}))
    return ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())


@pytest.fixture(params=["front", "middleware", "chain"])
async def client(
    request: pytest.FixtureRequest, content: ContentService
) -> AsyncIterator[TestClient]:
    app = create_app(content, KeyRing.from_settings(f"send:{SECRET}:content:read", None))
    if request.param == "chain":
        app.middlewares.remove(hot_middleware)
    server = HotTestServer(app) if request.param == "front" else TestServer(app)
    async with TestClient(server) as c:
        yield c


@pytest.mark.parametrize("fmt", ["html", "json"])
@pytest.mark.parametrize(
    ("user", "block", "reason"),
    [
        ("nobody-7f3a", "recommendations", "unknown_user"),
        (VIEWER, "cart_reminder", "empty_cart"),
    ],
)
async def test_a_fallback_block_get_says_why(
    client: TestClient, user: str, block: str, reason: str, fmt: str
) -> None:
    path = f"/v1/users/{user}/blocks/{block}?format={fmt}"
    for _ in range(2):  # rendered, then from the cache
        r = await client.get(path, headers=AUTH)
        assert r.status == 200 and r.headers["X-Persona-Fallback"] == "1"
        assert r.headers[HEADER] == reason
    again = await client.get(path, headers={**AUTH, "If-None-Match": r.headers["ETag"]})
    assert again.status == 304 and again.headers[HEADER] == reason


async def test_a_personal_block_has_no_reason(client: TestClient, content: ContentService) -> None:
    personal = [u for u in SHOPPERS if not content.block(u, "cart_reminder", "html").fallback]
    assert personal
    for user in personal:
        r = await client.get(f"/v1/users/{user}/blocks/cart_reminder", headers=AUTH)
        assert r.status == 200 and "X-Persona-Fallback" not in r.headers
        assert HEADER not in r.headers


def _results(raw: bytes, accept: str) -> dict[str, Any]:
    if accept == "application/msgpack":
        return dict(msgpack.unpackb(raw)["results"])
    return dict(json.loads(raw)["results"])


@pytest.mark.parametrize("accept", ["application/json", "application/msgpack"])
@pytest.mark.parametrize("fmt", ["html", "json"])
async def test_each_fallback_entry_of_a_batch_says_why(
    client: TestClient, accept: str, fmt: str
) -> None:
    ids = [*SHOPPERS, VIEWER, "nobody-1", "nobody-2"]
    body = {"block": "cart_reminder", "format": fmt, "user_ids": ids}
    r = await client.post("/v1/blocks:batch", json=body, headers={**AUTH, "Accept": accept})
    assert r.status == 200
    results = _results(await r.read(), accept)
    assert results["nobody-1"]["fallback_reason"] == "unknown_user"
    assert results["nobody-2"]["fallback_reason"] == "unknown_user"
    assert results[VIEWER]["fallback_reason"] == "empty_cart"
    personal = [u for u in SHOPPERS if not results[u]["fallback"]]
    assert personal
    for user in personal:
        assert "fallback_reason" not in results[user]
    for entry in results.values():
        assert entry["fallback"] == ("fallback_reason" in entry)


async def test_users_cut_by_a_batch_deadline_say_deadline(
    content: ContentService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user a deadline cut gets an unknown user's fallback: `unknown_user` would tell the
    sender the id is wrong; `deadline` says it was time."""
    app = create_app(content, KeyRing.from_settings(f"send:{SECRET}:content:read", None))
    async with TestClient(TestServer(app)) as client:
        slow_chunks(client, monkeypatch, 2, 10)
        for fmt in ("html", "json"):
            body = {"block": "cart_reminder", "format": fmt, "user_ids": SHOPPERS}
            r = await client.post(
                "/v1/blocks:batch", json={**body, "deadline_ms": 15}, headers=AUTH
            )
            assert r.status == 200 and r.headers["X-Persona-Deadline-Fallbacks"] == "6"
            results = (await r.json())["results"]
            for user in SHOPPERS[2:]:
                assert results[user]["fallback_reason"] == "deadline", results[user]
            unknown = {**body, "user_ids": ["nobody-3"]}
            r = await client.post("/v1/blocks:batch", json=unknown, headers=AUTH)
            assert (await r.json())["results"]["nobody-3"]["fallback_reason"] == "unknown_user"


def test_every_reason_is_explained_in_the_serving_docs() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "serving.md").read_text()
    assert HEADER in docs and "fallback_reason" in docs
    for reason in REASONS:
        assert f"`{reason}`" in docs, reason


class BrokenState(MemoryState):
    def profile(self, user_id: str) -> Any:
        raise OSError("the state store is unreadable")


async def test_a_block_that_failed_says_error_not_unknown_user() -> None:
    """A failing state read or model answers the fallback: the reason is `error`, where the
    fallback computed as for a stranger said `unknown_user` (the sender would drop a good id)."""
    content = ContentService(BrokenState(), ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(f"send:{SECRET}:content:read", None))
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/v1/users/s1/blocks/recommendations", headers=AUTH)
        assert r.status == 200 and r.headers[HEADER] == "error"
        body = {"block": "recommendations", "user_ids": ["s1"]}
        r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
        assert (await r.json())["results"]["s1"]["fallback_reason"] == "error"
