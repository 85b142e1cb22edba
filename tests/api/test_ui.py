"""The preview and dashboard pages, their assets, and the explain / users routes over the
in-memory state (the browser tests in tests/ui drive them in Chromium)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.explain import churn_contributions, recommendation_reasons
from api.shared import CONTENT
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.events import validate
from engine.features import FEATURE_NAMES
from models.registry import ModelSet
from tests.api.test_app import AUTH, T0, ev, product

MODELS = ModelSet.default()


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    state = MemoryState()
    for item in MODELS.recs.popular[:200]:
        state.put_product(product(item))
    recent = MODELS.recs.popular[:3]
    await state.produce(
        [validate(ev("u1", "product_view", item, T0 + i)) for i, item in enumerate(recent)]
    )
    keys = KeyRing.from_settings(
        "all:s3cret-kkkkkkkkkkkkkkkkk:content:read;feeds:f33d-kkkkkkkkkkkkkkkkkkk:feeds:read", None
    )
    content = ContentService(state, MODELS, Renderer(), BlockPolicy())
    async with TestClient(TestServer(create_app(content, keys))) as c:
        yield c


@pytest.mark.parametrize("path", ["/ui/preview", "/ui/dashboard"])
async def test_pages_need_a_content_read_key_and_show_sign_in_without(
    client: TestClient, path: str
) -> None:
    r = await client.get(path)
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    shell = await r.text()
    assert 'id="login-form"' in shell and "s3cret-kkkkkkkkkkkkkkkkk" not in shell
    assert (
        await client.get(path, headers={"Authorization": "Bearer f33d-kkkkkkkkkkkkkkkkkkk"})
    ).status == 401
    r = await client.get(path, headers=AUTH)
    assert r.status == 200 and r.content_type == "text/html"
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert await r.text() == shell  # the shell holds no data: the data routes take the key


async def test_assets_are_served_by_persona_itself(client: TestClient) -> None:
    for page in ("/ui/preview", "/ui/dashboard"):
        html = await (await client.get(page, headers=AUTH)).text()
        assert "http://" not in html and "https://" not in html  # no CDN
        for asset in ("common.js", "ui.css"):
            assert f"/ui/static/{asset}" in html
    for asset in ("common.js", "preview.js", "dashboard.js", "charts.js", "ui.css"):
        r = await client.get(f"/ui/static/{asset}")
        assert r.status == 200, asset
        assert "https://" not in await r.text()
    assert (await client.get("/ui/static/preview.html")).status == 404
    assert (await client.get("/ui/static/..%2fui.py")).status == 404


@pytest.mark.parametrize(
    "name",
    [
        "a" * 300 + ".js",  # longer than a file name may be: stat raised ENAMETOOLONG
        ("a" * 200 + "/") * 30 + "x.css",  # a path too long, after %2F decoding
        "ui.css%00",  # a NUL byte
        "%ED%A0%80.js",  # a lone surrogate
    ],
)
async def test_an_asset_name_no_file_can_have_is_a_404_not_a_500(
    client: TestClient, name: str
) -> None:
    """/ui/static/{name} looked the name up on the disk: a name longer than the file system's
    limit raised OSError (ENAMETOOLONG) out of the handler, a 500 with a traceback in the log
    for an unauthenticated request. Only the shipped assets are served; any other name is a 404
    problem."""
    r = await client.get("/ui/static/" + name.replace("/", "%2F"))
    assert r.status == 404, await r.text()
    assert (await r.json())["title"] == "Not Found"


async def test_explain_says_why(client: TestClient) -> None:
    assert (await client.get("/v1/users/u1/explain")).status == 401
    assert (await client.get("/v1/users/nobody/explain", headers=AUTH)).status == 404
    r = await client.get("/v1/users/u1/explain", headers=AUTH)
    assert r.status == 200
    why = await r.json()
    assert [i["item_id"] for i in why["recent_items"]] == MODELS.recs.popular[:3][::-1]
    assert why["recent_items"][0]["title"].startswith("Product ")
    assert set(why["models"]) == {"churn", "recs"}
    assert 0 <= why["churn"]["score"] <= 1 and len(why["churn"]["top_features"]) == 5
    assert set(why["churn"]["features"]) == set(FEATURE_NAMES)
    recent = {i["item_id"] for i in why["recent_items"]}
    explained = [r for r in why["recommendations"] if r["source"] == "neighbours"]
    assert explained, "the neighbours of recent items should produce recommendations"
    for rec in explained:
        assert {b["item_id"] for b in rec["because"]} <= recent
    assert set(why["blocks"]) == {"recommendations", "cart_reminder", "winback"}
    assert why["blocks"]["cart_reminder"] == {**why["blocks"]["cart_reminder"], "fallback": True}
    assert why["blocks"]["recommendations"]["variant"] == "default"


async def test_the_why_is_in_shop_language(client: TestClient) -> None:
    """No model terms, money with its currency, orders rather than purchase lines, titles."""
    state = client.server.app[CONTENT].state
    items = MODELS.recs.popular[:3]
    order = {"order_id": "o-1", "locale": "en-GB"}
    bought = [  # one order of three lines, paid in GBP, and one item left in the cart
        {**ev("shop-1", "purchase", item, T0 + 10 + i), "price": 4.0, "currency": "GBP"}
        | {"quantity": 2, "props": order}
        for i, item in enumerate(items)
    ]
    carted = ev("shop-1", "add_to_cart", MODELS.recs.popular[5], T0 + 20) | {"quantity": 3}
    await state.produce([validate(e) for e in [*bought, carted]])
    r = await client.get("/v1/users/shop-1/explain", headers=AUTH)
    assert r.status == 200
    body = await r.json()
    shop = body["shop"]
    assert shop["customer"]["orders"] == 1 and shop["customer"]["spent"] == ["£24.00"]
    (line,) = shop["customer"]["cart"]
    assert line == {"title": f"Product {MODELS.recs.popular[5]}", "quantity": 3, "price": "£2.50"}
    words = json.dumps(shop)
    for term in ("log-odds", "similarity", "weight", "contribution", "churn"):
        assert term not in words, term
    assert body["churn"]["top_features"]  # the technical "why" stays for data scientists
    assert 0 <= shop["risk"]["percent"] <= 100 and shop["risk"]["level"] in (
        "low",
        "medium",
        "high",
    )
    assert all(
        d["effect"] in ("raises the risk", "lowers the risk") for d in shop["risk"]["drivers"]
    )
    for rec in shop["recommendations"]:
        assert rec["title"] == f"Product {rec['item_id']}" and rec["price"] == "£2.50"
        assert rec["item_id"] not in rec["because"]  # products by their titles
    explained = [r for r in shop["recommendations"] if "also chose it" in r["because"]]
    assert explained and "(bought)" in explained[0]["because"]
    cart = shop["blocks"]["cart_reminder"]
    assert cart["fallback"] is False and cart["reason_text"] == ""
    winback = shop["blocks"]["winback"]
    assert winback["fallback"] and "not at risk" in winback["reason_text"]


async def test_unknown_and_unconsenting_users_say_why_they_get_the_fallback(
    client: TestClient,
) -> None:
    r = await client.get("/v1/users/nobody-at-all/explain", headers=AUTH)
    assert r.status == 404 and "every block is the fallback" in (await r.json())["detail"]
    state = client.server.app[CONTENT].state
    withdrawn = ev("shop-2", "consent", None, T0) | {"props": {"personalization": False}}
    await state.produce([validate(withdrawn)])
    r = await client.get("/v1/users/shop-2/explain", headers=AUTH)
    assert r.status == 403 and "every block is the fallback" in (await r.json())["detail"]


async def test_users_lists_a_sample(client: TestClient) -> None:
    r = await client.get("/v1/users?limit=5", headers=AUTH)
    assert [u["user_id"] for u in (await r.json())["users"]] == ["u1"]
    assert (await client.get("/v1/users?limit=x", headers=AUTH)).status == 400
    r = await client.get("/v1/users?limit=5&limit=500", headers=AUTH)  # the first was taken
    assert r.status == 400 and (await r.json())["parameter"] == "limit"


def test_reasons_weight_recent_items_by_recency() -> None:
    class Recs:
        recency_decay = 0.5

        def neighbours_of(self, item: str) -> list[tuple[str, float]]:
            return {"a": [("x", 0.8), ("y", 0.1)], "b": [("x", 0.9)]}.get(item, [])

    reasons = recommendation_reasons([("a", 2), ("b", 1)], ["x", "y", "z"], Recs())
    assert [r["item_id"] for r in reasons["x"]] == ["a", "b"]  # 0.8 beats 0.9 * 0.5
    assert reasons["x"][1]["contribution"] == 0.45 and reasons["z"] == []


def test_reasons_read_the_history_as_the_recommender_does() -> None:
    """The "why" weighs the same items with the same weights as the scorer: the newest
    `history` items of the long history, decay**rank + floor (models.recs.history_weights)."""

    class Recs:
        recency_decay = 0.5
        history = 2
        history_floor = 0.1

        def neighbours_of(self, item: str) -> list[tuple[str, float]]:
            return {"a": [("x", 1.0)], "b": [("x", 1.0)], "c": [("x", 1.0)]}.get(item, [])

    reasons = recommendation_reasons([("a", 3), ("b", 2), ("c", 1)], ["x"], Recs())
    assert [(r["item_id"], r["contribution"]) for r in reasons["x"]] == [("a", 1.1), ("b", 0.6)]


def test_the_explanation_names_items_beyond_the_thirty_recent_ones() -> None:
    from engine.profile import apply

    profile = None
    for n in range(40):  # the oldest views fall out of `recent` but stay in the long history
        profile = apply(profile, validate(ev("u-long", "product_view", f"I{n}", T0 + n * 60_000)))
    assert profile is not None and "I0" not in {i for i, _ in profile.recent}

    class Recs:
        recency_decay = 0.99
        history = 200
        history_floor = 0.0

        def neighbours_of(self, item: str) -> list[tuple[str, float]]:
            return [("x", 1.0)] if item == "I0" else []

    from engine.profile import history_newest

    reasons = recommendation_reasons(history_newest(profile), ["x"], Recs())
    assert [r["item_id"] for r in reasons["x"]] == ["I0"]


def test_churn_contributions_add_up_to_the_score() -> None:
    import math

    from engine.features import features
    from engine.profile import apply

    event = {**ev("u9", "purchase", "A", T0), "quantity": 2, "price": 3.0, "currency": "GBP"}
    profile = apply(None, validate(event))
    vec = features(profile, T0 + 40 * 86_400_000)
    parts = churn_contributions(MODELS.churn, vec)
    z = sum(p["weight"] for p in parts) + MODELS.churn.intercept
    assert 1 / (1 + math.exp(-z)) == pytest.approx(MODELS.churn.score(vec), abs=1e-3)
    assert abs(parts[0]["weight"]) >= abs(parts[-1]["weight"])
    assert churn_contributions(object(), vec) == []


async def test_every_page_and_asset_carries_the_security_headers(client: TestClient) -> None:
    """The pages had a CSP with frame-ancestors but no X-Frame-Options (browsers that predate
    frame-ancestors framed them: clickjacking of the sign-in form); the assets had no CSP, no
    framing or referrer rule (an asset opened by itself, an SVG above all, runs as a page of
    Persona's origin). Every HTML and JS answer now carries all of them, also the 401 shell."""
    answers = [await client.get(p, headers=h) for p in PAGE_PATHS for h in (AUTH, {})]
    answers += [await client.get(f"/ui/static/{a}") for a in STATIC_ASSETS]
    for r in answers:
        assert r.headers["X-Content-Type-Options"] == "nosniff", r.url
        assert r.headers["X-Frame-Options"] == "DENY", r.url
        assert r.headers["Referrer-Policy"] == "no-referrer", r.url
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "base-uri 'none'" in csp, r.url
        assert ("'unsafe-eval'" not in csp and "script-src 'self'" in csp) or (
            "default-src 'none'" in csp and "script-src" not in csp
        ), r.url


PAGE_PATHS = ("/ui/preview", "/ui/dashboard")
STATIC_ASSETS = ("common.js", "preview.js", "dashboard.js", "charts.js", "ui.css")


def test_the_preview_escapes_the_direction_controls_the_engine_isolates() -> None:
    """The ad JSON box showed a title's right-to-left override raw (the rest of the line read
    reversed); preview.js escapes the characters of its DIRECTION_CONTROLS class, which must be
    engine/text.py's list of direction controls, no fewer."""
    import re
    from pathlib import Path

    from engine.text import _BIDI

    script = (Path(__file__).parents[2] / "api" / "static" / "preview.js").read_text()
    found = re.search(r"const DIRECTION_CONTROLS = /\[([^\]]+)\]/g;", script)
    assert found is not None and "pretty = readableJson(pretty);" in script
    chars: set[str] = set()
    for first, last in re.findall(r"\\u([0-9a-f]{4})(?:-\\u([0-9a-f]{4}))?", found.group(1)):
        chars.update(chr(c) for c in range(int(first, 16), int(last or first, 16) + 1))
    assert chars == set(_BIDI)
