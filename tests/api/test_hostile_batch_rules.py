"""Hostile input to the send-time batch (`POST /v1/blocks:batch`) and to the admin documents
(`PUT /v1/rules`, `PUT /v1/experiments`): user ids no id may hold, wrong types in a parameter's
list, a rules document that costs seconds of CPU on every block it applies to, and two edits
with the same `If-Match` racing each other."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.models_routes import ADMIN
from api.testing import MemoryRegistry, MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.rules import _Plan
from models.registry import ModelSet

READ_KEY = "read-key-0123456789abcdefghij"
RULES_KEY = "rules-key-0123456789abcdefghi"
MODELS_KEY = "models-key-0123456789abcdefgh"
KEYS = f"shop:{READ_KEY}:content:read;merch:{RULES_KEY}:rules:admin;ds:{MODELS_KEY}:models:admin"
ITEMS = [f"i{n}" for n in range(1000)]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Shop:
    client: TestClient
    content: ContentService


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    state = MemoryState()
    for item in [*ModelSet.default().recs.popular[:20], *ITEMS]:
        url = f"https://shop.example/{item}"
        state.put_product(Product(item, f"P {item}", url, url + ".jpg", 2.0, "GBP", "in_stock"))
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None))
    app[ADMIN] = MemoryRegistry(content, state)
    async with TestClient(TestServer(app)) as client:
        yield Shop(client, content)


async def batch(shop: Shop, body: bytes, accept: str = "") -> tuple[int, dict[str, Any]]:
    headers = {**bearer(READ_KEY), "Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    r = await shop.client.post("/v1/blocks:batch", data=body, headers=headers)
    raw = await r.read()
    if r.content_type == "application/msgpack":
        return r.status, msgpack.unpackb(raw)
    return r.status, json.loads(raw)


# -- the batch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["html", "json"])
@pytest.mark.parametrize("accept", ["", "application/msgpack"])
@pytest.mark.parametrize(
    ("user_id", "says"),
    [("\\ud800", "lone surrogate (U+D800)"), ("a\\u0000b", "control character (U+0000)")],
)
async def test_a_user_id_no_id_may_hold_is_a_400_naming_it(
    shop: Shop, fmt: str, accept: str, user_id: str, says: str
) -> None:
    """A lone surrogate in a user id was a 500 (UnicodeEncodeError writing the answer, JSON or
    msgpack); a control character was answered as a user of that id. Ids refuse both
    (engine/text.py), and the batch says which entry."""
    body = f'{{"block":"recommendations","format":"{fmt}","user_ids":["ok","{user_id}"]}}'
    status, problem = await batch(shop, body.encode(), accept)
    assert status == 400, problem
    assert says in problem["detail"] and "user_ids[1]" in problem["detail"]


async def test_render_refuses_the_same_user_ids(shop: Shop) -> None:
    """`POST /v1/render` reads its user ids as the batch does: a lone surrogate was a 500 there."""
    body = '{"template": "hi {{ user.user_id }}", "user_ids": ["\\ud800"]}'
    headers = {**bearer(READ_KEY), "Content-Type": "application/json"}
    r = await shop.client.post("/v1/render", data=body, headers=headers)
    problem = await r.json(content_type=None)
    assert r.status == 400 and "user_ids[0] contains a lone surrogate" in problem["detail"]


async def test_a_non_string_in_exclude_is_a_400(shop: Shop) -> None:
    """`"exclude": [null]` was taken as an exclusion of the item id "" (200)."""
    for bad in (None, 7, True):
        body = {"block": "recommendations", "user_ids": ["u1"], "exclude": ["i1", bad]}
        status, problem = await batch(shop, json.dumps(body).encode())
        assert status == 400 and problem["parameter"] == "exclude", (bad, problem)


@pytest.mark.parametrize("name", ["min_price", "max_price"])
async def test_a_price_of_400_digits_is_a_400(shop: Shop, name: str) -> None:
    """A JSON integer too large for a float (under Python's 4300-digit limit) was a 500: the
    OverflowError of float() escaped the parameter check."""
    body = f'{{"block":"recommendations","user_ids":["u1"],"{name}":{"9" * 400}}}'
    status, problem = await batch(shop, body.encode())
    assert status == 400 and problem["parameter"] == name, problem


async def test_the_largest_batch_stays_bounded(shop: Shop) -> None:
    """1000 distinct user ids of 128 characters (the documented maximum): one answer each, in
    bounded time; one more entry (even a duplicate) is a 400."""
    ids = [f"{n:0128d}" for n in range(1000)]
    body: dict[str, Any] = {"block": "recommendations", "format": "json", "user_ids": ids}
    started = time.perf_counter()
    status, answer = await batch(shop, json.dumps(body).encode())
    assert status == 200 and len(answer["results"]) == 1000
    assert time.perf_counter() - started < 10
    body["user_ids"] = [*ids, ids[0]]
    status, problem = await batch(shop, json.dumps(body).encode())
    assert status == 400 and "at most 1000" in problem["detail"]


# -- the rules ------------------------------------------------------------------------------------


def costly_rules(pins: int, excludes: int) -> dict[str, Any]:
    """Pins of 1000 listed items each, and every item excluded by the last of many exclude rules:
    each pin tried each listed item against every exclude rule."""
    rules: list[dict[str, Any]] = [
        {"id": f"x{n}", "action": "exclude", "match": {"brand": f"b{n}"}} for n in range(excludes)
    ]
    rules.append({"id": "all", "action": "exclude", "match": {"min_price": 0}})
    rules += [
        {"id": f"p{n}", "action": "pin", "position": 1, "match": {"item_ids": ITEMS}}
        for n in range(pins)
    ]
    return {"rules": rules}


@pytest.mark.parametrize(
    ("rule", "place"),
    [
        ({"action": "boost", "weight": "W", "match": {"brand": "b"}}, "rules[0].weight"),
        ({"action": "exclude", "match": {"min_price": "W"}}, "rules[0].match.min_price"),
        ({"action": "exclude", "match": {"max_price": "W"}}, "rules[0].match.max_price"),
    ],
)
async def test_a_number_of_400_digits_in_a_rule_is_a_400_naming_its_place(
    shop: Shop, rule: dict[str, Any], place: str
) -> None:
    """An integer too large for a float was a 500 (OverflowError out of math.isfinite)."""
    body = json.dumps({"rules": [{"id": "r", **rule}]}).replace('"W"', "9" * 400)
    r = await shop.client.put("/v1/rules", data=body, headers=bearer(RULES_KEY))
    problem = await r.json(content_type=None)
    assert r.status == 400 and problem["detail"].startswith(place), problem


@pytest.mark.parametrize("field", ["category", "brand"])
@pytest.mark.parametrize(
    ("text", "says"),
    [("\\ud800", "lone surrogate (U+D800)"), ("a\\u0000b", "control character (U+0000)")],
)
async def test_a_category_or_brand_no_text_may_hold_is_a_400(
    shop: Shop, field: str, text: str, says: str
) -> None:
    """A lone surrogate or a control character in a rule's category or brand was stored and
    published (200), though the catalog refuses both in its text: no product could match."""
    body = f'{{"rules":[{{"id":"r","action":"exclude","match":{{"{field}":"{text}"}}}}]}}'
    r = await shop.client.put("/v1/rules", data=body, headers=bearer(RULES_KEY))
    problem = await r.json(content_type=None)
    assert r.status == 400 and f"rules[0].match.{field}: contains a {says}" in problem["detail"]
    assert shop.content.models.rules.version == "0"


async def test_a_rules_document_costing_seconds_per_block_is_refused(shop: Shop) -> None:
    """A 440 KB document (under the 512 KB bound) of 60 pins listing 1000 items each and 400
    exclude rules was accepted, and then every block it applied to took seconds of CPU on the
    event loop. The work of the pins is bounded when the document is put."""
    document = costly_rules(60, 400)
    assert len(json.dumps(document)) < 512 * 1024
    r = await shop.client.put("/v1/rules", json=document, headers=bearer(RULES_KEY))
    problem = await r.json(content_type=None)
    started = time.perf_counter()
    block = await shop.client.get(
        "/v1/users/u1/blocks/recommendations?format=json", headers=bearer(READ_KEY)
    )
    elapsed = time.perf_counter() - started
    assert (r.status, block.status, elapsed < 1.0) == (400, 200, True), (r.status, elapsed)
    assert "pin" in problem["detail"] and shop.content.models.rules.version == "0"


async def test_pins_and_exclusions_within_the_bound_are_accepted(shop: Shop) -> None:
    """1000 listed items and 10 rules: 10,000 checks, the most a document may cost."""
    r = await shop.client.put("/v1/rules", json=costly_rules(1, 8), headers=bearer(RULES_KEY))
    assert r.status == 200
    r = await shop.client.put("/v1/rules", json=costly_rules(1, 9), headers=bearer(RULES_KEY))
    problem = await r.json(content_type=None)
    assert r.status == 400 and "10000 checks" in problem["detail"], problem


async def block_status(shop: Shop) -> int:
    r = await shop.client.get(
        "/v1/users/u1/blocks/recommendations?format=json", headers=bearer(READ_KEY)
    )
    return r.status


async def test_a_replaced_rules_document_is_not_kept_in_memory(shop: Shop) -> None:
    """Every document served kept its rules and their indexes in a module-wide cache of 64
    plans after it was replaced: 64 edits of a 512 KB document of item ids, each served once,
    held ~800 MB. A replaced document's rules are freed with it."""
    kept = []
    for n in range(6):
        listed = [f"gone-{n}-{i}" for i in range(1000)]
        document = {"rules": [{"id": f"v{n}", "action": "exclude", "match": {"item_ids": listed}}]}
        r = await shop.client.put("/v1/rules", json=document, headers=bearer(RULES_KEY))
        assert r.status == 200
        kept.append(weakref.ref(shop.content.models.rules.rules[0]))
        assert await block_status(shop) == 200
    gc.collect()
    assert [ref() is not None for ref in kept] == [False] * 5 + [True]


async def test_a_document_keeps_the_plans_of_the_current_phase_only(shop: Shop) -> None:
    """A rule starting every second made a new live list, and a new plan of the whole document
    (its indexes of every item id), each second; 64 were kept: 64 times the memory of the
    largest document a minute after it was put. Only the current phase's plans are kept."""
    big = f"big-{uuid.uuid4().hex}"
    now = shop.content.state.now_ms()
    rules: list[dict[str, Any]] = [
        {"id": big, "action": "exclude", "match": {"item_ids": [f"x{i}" for i in range(1000)]}}
    ]
    rules += [
        {"id": f"s{n}", "action": "boost", "match": {"brand": "b"}, "starts": now + 1000 * n}
        for n in range(1, 21)
    ]
    r = await shop.client.put("/v1/rules", json={"rules": rules}, headers=bearer(RULES_KEY))
    assert r.status == 200
    for _ in range(21):
        assert await block_status(shop) == 200
        shop.content.state.wall.advance(1000)  # type: ignore[attr-defined]
    gc.collect()
    plans = [o for o in gc.get_objects() if isinstance(o, _Plan) and o.ids[0] == big]
    assert 1 <= len(plans) <= 4, len(plans)  # at most one a block


# -- two edits of the same version ----------------------------------------------------------------

EXPERIMENT = {
    "name": "layout",
    "block": "recommendations",
    "arms": [{"variant": "default", "weight": 1}],
    "holdout": 0.5,
}


@pytest.mark.parametrize(
    ("path", "key", "first", "second"),
    [
        ("/v1/rules", RULES_KEY, {"rules": []}, {"rules": [costly_rules(1, 0)["rules"][0]]}),
        ("/v1/experiments", MODELS_KEY, {"experiments": []}, {"experiments": [EXPERIMENT]}),
    ],
)
async def test_a_slow_edit_of_a_version_another_edit_replaced_is_412(
    shop: Shop, path: str, key: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    """Two editors with `If-Match: "0"`: the one whose body arrived last was checked against the
    version before its body arrived, so it overwrote the other's change unseen, under the same
    version number ("1" twice). The version is checked when the document is read whole."""
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        text = json.dumps(second).encode()
        yield text[:1]
        await release.wait()
        yield text[1:]

    headers = {**bearer(key), "If-Match": '"0"', "Content-Type": "application/json"}
    slow = asyncio.create_task(shop.client.put(path, data=slow_body(), headers=headers))
    await asyncio.sleep(0.2)  # the slow edit's headers are in: its handler waits for the body
    fast = await shop.client.put(path, json=first, headers=headers)
    assert fast.status == 200 and fast.headers["ETag"] == '"1"'
    release.set()
    late = await slow
    answer = await late.json(content_type=None)
    assert late.status == 412, answer
    current = await shop.client.get(path, headers=bearer(key))
    assert current.headers["ETag"] == '"1"' and await current.json() == {
        **first,
        "version": "1",
    }
