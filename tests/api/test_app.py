"""The HTTP API over the in-memory state: routes, auth, problem bodies, ETags, fallbacks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import CONTENT, create_app
from api.auth import KeyRing
from api.content import ContentService
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.events import validate
from models.registry import ModelSet

T0 = 1_300_000_000_000
AUTH = {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}


def product(item_id: str, availability: str = "in_stock") -> Product:
    return Product(
        item_id,
        f"Product {item_id}",
        f"https://shop.example.com/p/{item_id}",
        f"https://shop.example.com/i/{item_id}.jpg",
        2.5,
        "GBP",
        availability,
    )


@pytest.fixture
def state() -> MemoryState:
    s = MemoryState()
    models = ModelSet.default()
    for item in models.recs.popular[:50]:
        s.put_product(product(item))
    for item in ("A", "B", "C"):
        s.put_product(product(item))
    return s


@pytest.fixture
async def client(state: MemoryState) -> AsyncIterator[TestClient]:
    keys = KeyRing.from_settings(
        "all:s3cret-kkkkkkkkkkkkkkkkk:content:read,events:write;ro:ro-kkkkkkkkkkkkkkkkkkkkk:content:read;admin:adm-kkkkkkkkkkkkkkkkkkkk:privacy:admin",
        None,
    )
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    async with TestClient(TestServer(create_app(content, keys))) as c:
        yield c


def ev(user: str, type_: str, item: str | None, ts: int = T0, n: list[int] = [0]) -> dict:  # noqa: B006
    n[0] += 1
    data = {"event_id": f"t{n[0]}", "type": type_, "user_id": user, "ts": ts}
    if item:
        data["item_id"] = item
    return data


async def test_public_routes_need_no_key(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await client.get(path)).status == 200


async def test_readyz_is_503_until_ready(client: TestClient, state: MemoryState) -> None:
    state.is_ready = False
    assert (await client.get("/readyz")).status == 503


async def test_a_rebalance_after_the_first_ready_keeps_readyz_200(
    client: TestClient, state: MemoryState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker of a group rebalances at once when one joins or leaves: answering 503 then
    left a load balancer with no worker. Before the first ready, and for other reasons, 503."""
    said = [(False, "tables recovering: 7 changelog records to read"), (False, "rebalancing")]
    monkeypatch.setattr(state, "ready", lambda: said[0])
    first = await client.get("/readyz")
    assert first.status == 503  # not ready yet: a rebalance before the first ready counts
    said[0] = (True, "ok")
    assert (await client.get("/readyz")).status == 200
    for reason in ("rebalancing", "tables recovering: 1,234 changelog records to read"):
        said[0] = (False, reason)
        r = await client.get("/readyz")
        assert r.status == 200 and (await r.json())["detail"] == f"ok; {reason}"
    said[0] = (False, "models loading")  # anything else is still a 503
    assert (await client.get("/readyz")).status == 503


async def test_every_other_route_needs_a_key_with_the_scope(client: TestClient) -> None:
    r = await client.get("/v1/users/u/blocks/recommendations")
    assert r.status == 401 and r.headers["Content-Type"].startswith("application/problem+json")
    body = await r.json(content_type=None)
    assert body["status"] == 401 and body["title"] == "Unauthorized"
    r = await client.post(
        "/v1/events", json=[], headers={"Authorization": "Bearer ro-kkkkkkkkkkkkkkkkkkkkk"}
    )
    assert r.status == 403


async def test_unknown_user_gets_fallback_blocks(client: TestClient) -> None:
    r = await client.get("/v1/users/nobody/blocks/recommendations?format=json", headers=AUTH)
    assert r.status == 200 and r.headers["X-Persona-Fallback"] == "1"
    body = json.loads(await r.text())
    assert body["fallback"] is True and len(body["items"]) == 6
    assert (await client.get("/v1/users/nobody/profile", headers=AUTH)).status == 404


async def test_events_then_personal_blocks_and_etag(client: TestClient, state: MemoryState) -> None:
    r = await client.post(
        "/v1/events",
        headers=AUTH,
        json=[ev("u1", "add_to_cart", "A"), ev("u1", "product_view", "B", T0 + 1), {"bad": 1}],
    )
    assert r.status == 202
    assert await r.json() == {
        "accepted": 2,
        "rejected": 1,
        "errors": [{"index": 2, "reason": "missing required field 'event_id'"}],
    }
    r = await client.get("/v1/users/u1/blocks/cart_reminder?format=json", headers=AUTH)
    body = json.loads(await r.text())
    assert "X-Persona-Fallback" not in r.headers and body["fallback"] is False
    assert [i["item_id"] for i in body["items"]] == ["A"]
    etag = r.headers["ETag"]
    r = await client.get(
        "/v1/users/u1/blocks/cart_reminder?format=json", headers={**AUTH, "If-None-Match": etag}
    )
    assert r.status == 304
    await state.produce([validate(ev("u1", "remove_from_cart", "A", T0 + 2))])
    r = await client.get(
        "/v1/users/u1/blocks/cart_reminder?format=json", headers={**AUTH, "If-None-Match": etag}
    )
    assert r.status == 200 and r.headers["X-Persona-Fallback"] == "1"


async def test_profile_has_contract_fields(client: TestClient, state: MemoryState) -> None:
    await state.produce([validate(ev("u2", "product_view", "A"))])
    r = await client.get("/v1/users/u2/profile", headers=AUTH)
    body = await r.json()
    for field in (
        "user_id",
        "events",
        "cart",
        "recent_items",
        "consent",
        "scores",
        "recommendations",
        "models",
    ):
        assert field in body
    assert body["events"] == {"product_view": 1} and body["recent_items"] == ["A"]
    assert body["consent"] == {"personalization": True, "email": True, "ads": True}
    assert r.headers["X-Persona-Model"]


async def test_cached_block_is_not_rendered_again(client: TestClient, state: MemoryState) -> None:
    await state.produce([validate(ev("u3", "add_to_cart", "B"))])
    first = await client.get("/v1/users/u3/blocks/cart_reminder", headers=AUTH)
    content = client.server.app[CONTENT]
    misses = content.cache.misses
    for _ in range(5):
        again = await client.get("/v1/users/u3/blocks/cart_reminder", headers=AUTH)
        assert again.headers["ETag"] == first.headers["ETag"]
    assert content.cache.misses == misses


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/users/u/blocks/nope", 404),
        ("/v1/users/u/blocks/recommendations?format=xml", 400),
        ("/v1/users/" + "x" * 129 + "/blocks/recommendations", 400),
    ],
)
async def test_bad_requests_get_problems(client: TestClient, path: str, status: int) -> None:
    r = await client.get(path, headers=AUTH)
    assert r.status == status
    assert (await r.json(content_type=None))["status"] == status


async def test_bad_event_bodies(client: TestClient) -> None:
    r = await client.post("/v1/events", data=b"{oops", headers=AUTH)
    assert r.status == 400
    r = await client.post("/v1/events", data=b'{"a": 1}\nnot json\n', headers=AUTH)
    assert r.status == 400 and "line 2" in (await r.json(content_type=None))["detail"]


async def test_export_and_erase_need_privacy_scope_and_forget_everything(
    client: TestClient, state: MemoryState
) -> None:
    await state.produce([validate(ev("gone", "add_to_cart", "A"))])
    await client.get("/v1/users/gone/blocks/cart_reminder", headers=AUTH)
    assert (await client.get("/v1/users/gone/export", headers=AUTH)).status == 403
    admin = {"Authorization": "Bearer adm-kkkkkkkkkkkkkkkkkkkk"}
    r = await client.get("/v1/users/gone/export", headers=admin)
    body = await r.json()
    assert r.status == 200 and body["stored"]["cart"] == {"A": 1}
    (held,) = body["stored"]["history"]  # the long history is exported too: [item, ms, count]
    assert held[0] == "A" and held[2] == 1
    assert ["cart_reminder", "html", "default"] in body["cached_blocks"]
    r = await client.delete("/v1/users/gone", headers=admin)
    assert r.status == 200 and (await r.json())["erased"] is True
    assert (await client.get("/v1/users/gone/profile", headers=AUTH)).status == 404
    assert (await client.get("/v1/users/gone/export", headers=admin)).status == 404
    r = await client.get("/v1/users/gone/blocks/cart_reminder", headers=AUTH)
    assert r.headers["X-Persona-Fallback"] == "1"


async def test_erasing_an_id_no_user_can_hold_is_a_400_and_erases_nothing(
    client: TestClient, state: MemoryState
) -> None:
    """Events refuse user ids over 128 characters or holding control characters: DELETE of such
    an id named nobody, yet sent an erase command (a fence row per id) and answered 200."""
    admin = {"Authorization": "Bearer adm-kkkkkkkkkkkkkkkkkkkk"}
    for bad in ("x" * 129, "a%01b", "a%7Fb"):
        r = await client.delete(f"/v1/users/{bad}", headers=admin)
        assert r.status == 400, bad
        assert "no user can hold it" in (await r.json(content_type=None))["detail"]
    assert state.erased == []
    r = await client.delete("/v1/users/" + "y" * 128, headers=admin)  # at the bound: an id
    assert r.status == 200 and state.erased == ["y" * 128]


async def test_an_id_stored_before_invisible_characters_were_refused_is_still_erased(
    client: TestClient, state: MemoryState
) -> None:
    """New events refuse ids holding invisible characters (engine.text.new_id_problem); a user an
    older version stored under such an id must still be exportable and erasable."""
    admin = {"Authorization": "Bearer adm-kkkkkkkkkkkkkkkkkkkk"}
    r = await client.delete("/v1/users/old%E2%80%8Bid", headers=admin)  # a zero-width space
    assert r.status == 200 and state.erased == ["old\u200bid"]


async def test_consent_change_takes_effect_at_once_cached_blocks_included(
    client: TestClient, state: MemoryState
) -> None:
    await state.produce([validate(ev("c1", "add_to_cart", "A"))])
    url = "/v1/users/c1/blocks/cart_reminder"
    assert "X-Persona-Fallback" not in (await client.get(url, headers=AUTH)).headers
    assert (
        "X-Persona-Fallback" not in (await client.get(url + "?format=json", headers=AUTH)).headers
    )
    withdraw_ads = ev("c1", "consent", None, T0 + 1) | {"props": {"ads": False}}
    await state.produce([validate(withdraw_ads)])
    assert "X-Persona-Fallback" not in (await client.get(url, headers=AUTH)).headers
    r = await client.get(url + "?format=json", headers=AUTH)
    assert r.headers["X-Persona-Fallback"] == "1"  # ads blocks need ads consent
    withdraw_all = ev("c1", "consent", None, T0 + 2) | {"props": {"personalization": False}}
    await state.produce([validate(withdraw_all)])
    assert (await client.get(url, headers=AUTH)).headers["X-Persona-Fallback"] == "1"
    profile = await (await client.get("/v1/users/c1/profile", headers=AUTH)).json()
    assert profile["consent"] == {"personalization": False, "email": True, "ads": False}


async def test_events_from_the_future_and_hostile_bodies_are_refused_one_by_one(
    client: TestClient, state: MemoryState
) -> None:
    in_2099 = 4_070_908_800_000
    body = [
        ev("u-future", "page_view", None, ts=in_2099),
        ev("u-ok", "page_view", None),
        {**ev("u-ctl", "page_view", None), "user_id": "__faust\u0000offset__"},
        {**ev("u-deep", "page_view", None), "props": {"a": {"b": {"c": {"d": 1}}}}},
    ]
    r = await client.post("/v1/events", json=body, headers=AUTH)
    assert r.status == 202
    answer = await r.json()
    assert answer["accepted"] == 1 and answer["rejected"] == 3
    reasons = {e["index"]: e["reason"] for e in answer["errors"]}
    assert reasons[0].startswith("future:")
    assert "control character" in reasons[2] and "nested deeper" in reasons[3]
    assert state.profile("u-future") is None and state.profile("u-ok") is not None
    deep = "[" * 50_000 + "]" * 50_000
    r = await client.post("/v1/events", data=deep, headers=AUTH)
    assert r.status == 400 and "application/problem+json" in r.headers["Content-Type"]
