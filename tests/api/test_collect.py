"""Browser collection (api/collect.py, engine/collect.py): POST /v1/collect with publishable keys,
CORS for the configured origins only, ?key= and text/plain beacon bodies, the per-address limit,
and GET /v1/sdk.js."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import InvalidKey, KeyRing, parse_entry
from api.collect import MAX_BODY, MAX_EVENTS, SDK_FILE, Sdk
from api.content import ContentService
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.collect import user_hash
from engine.events import validate
from models.registry import ModelSet

PK = "pk-publishable-kkkkkkkkkkk"  # events:collect only
PKP = "pk-purchases-kkkkkkkkkkkkk"  # events:collect + events:collect-purchase
READ = "content-read-kkkkkkkkkkkkk"
BOTH = "content-collect-kkkkkkkkkk"
WRITE = "events-write-kkkkkkkkkkkkk"
KEYS = ";".join(
    [
        f"pk:{PK}:events:collect",
        f"pkp:{PKP}:events:collect,events:collect-purchase",
        f"read:{READ}:content:read,feeds:read",
        f"both:{BOTH}:content:read,events:collect",
        f"write:{WRITE}:events:write",
    ]
)
SHOP = "https://shop.example.com"
OTHER = "https://evil.example.net"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def ev(type_: str, user: str = "anon-1", item: str | None = "A", **extra: Any) -> dict[str, Any]:
    data = {"event_id": f"{type_}-{time.monotonic_ns()}", "type": type_, "user_id": user}
    data["ts"] = int(time.time() * 1000) - 1000
    if item is not None:
        data["item_id"] = item
    return data | extra


async def _client(state: MemoryState, per_minute: float = 10_000) -> TestClient:
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    options = ServingOptions(collect_origins=(SHOP,), collect_per_minute=per_minute)
    app = create_app(content, KeyRing.from_settings(KEYS, None), options)
    return TestClient(TestServer(app))


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


@pytest.fixture
async def client(state: MemoryState) -> AsyncIterator[TestClient]:
    async with await _client(state) as c:
        yield c


async def test_a_publishable_key_sends_views_and_cart_changes_to_the_profile(
    client: TestClient, state: MemoryState
) -> None:
    events = [ev("page_view", item=None), ev("product_view"), ev("add_to_cart", quantity=2)]
    r = await client.post("/v1/collect", json=events, headers=bearer(PK))
    assert r.status == 202
    assert await r.json() == {"accepted": 3, "rejected": 0, "errors": []}
    profile = await (await client.get("/v1/users/anon-1/profile", headers=bearer(READ))).json()
    assert profile["events"] == {"page_view": 1, "product_view": 1, "add_to_cart": 1}
    assert profile["cart"] == {"A": 2}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/users/anon-1/blocks/recommendations"),
        ("GET", "/v1/users/anon-1/profile"),
        ("GET", "/v1/users/anon-1/export"),
        ("GET", "/v1/feeds/google.tsv"),
        ("GET", "/v1/models"),
        ("POST", "/v1/events"),
    ],
)
async def test_a_publishable_key_reads_nothing_and_cannot_post_events(
    client: TestClient, state: MemoryState, method: str, path: str
) -> None:
    state.apply(validate(ev("product_view")))
    body = json.dumps([ev("purchase")]) if method == "POST" else None
    r = await client.request(method, path, data=body, headers=bearer(PK))
    assert r.status == 403, await r.text()
    assert "events:collect" not in (await r.json(content_type=None))["detail"]
    assert not state.produced


async def test_a_content_key_collects_only_with_the_scope(
    client: TestClient, state: MemoryState
) -> None:
    r = await client.post("/v1/collect", json=[ev("product_view")], headers=bearer(READ))
    assert r.status == 403 and "events:collect" in (await r.json(content_type=None))["detail"]
    assert not state.produced
    r = await client.post("/v1/collect", json=[ev("product_view")], headers=bearer(BOTH))
    assert r.status == 202 and (await r.json())["accepted"] == 1
    r = await client.post("/v1/collect", json=[ev("product_view")])
    assert r.status == 401


async def test_types_a_publishable_key_may_not_send_are_per_event_errors(
    client: TestClient, state: MemoryState
) -> None:
    events = [
        ev("product_view"),
        ev("like"),  # social
        ev("purchase", price=2.5, currency="GBP"),  # needs events:collect-purchase
        ev("consent", item=None, props={"personalization": True}),  # a grant
        ev("consent", item=None, props={"ads": False, "email": False}),  # a withdrawal
        ev("identify", user="u-7", item=None, props={"previous_id": "anon-1"}),
        ev("checkout", item=None),
        ev("bogus"),  # invalid for /v1/events too
    ]
    r = await client.post("/v1/collect", json=events, headers=bearer(PK))
    body = await r.json()
    assert r.status == 202 and body["accepted"] == 4 and body["rejected"] == 4
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert sorted(reasons) == [1, 2, 3, 7]
    assert "clickstream and cart events only" in reasons[1]
    assert "events:collect-purchase" in reasons[2]
    assert "only withdraw consent" in reasons[3]
    assert "unknown event type" in reasons[7]
    sent = [(e.type, e.user_id) for e in state.produced]
    assert sent == [
        ("product_view", "anon-1"),
        ("consent", "anon-1"),
        ("identify", "u-7"),
        ("checkout", "anon-1"),
    ]
    r = await client.post("/v1/collect", json=[events[2]], headers=bearer(PKP))
    assert (await r.json())["accepted"] == 1 and state.produced[-1].type == "purchase"


IDENTIFY_SECRET = "identify-secret-of-the-shop-ssss"


async def test_with_an_identify_secret_only_a_hash_from_the_shop_links_an_id(
    state: MemoryState,
) -> None:
    """A copied publishable key cannot link its anonymous id to a user it names: the hash the
    shop's server computed for that user must come with the identify."""
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    options = ServingOptions(collect_origins=(SHOP,), identify_secret=IDENTIFY_SECRET)
    app = create_app(content, KeyRing.from_settings(KEYS, None), options)
    good = user_hash(IDENTIFY_SECRET, "u-7")
    events = [
        ev("identify", user="u-7", item=None, props={"previous_id": "anon-1"}),
        ev("identify", user="u-7", item=None, props={"previous_id": "anon-1", "user_hash": 5}),
        ev(
            "identify",
            user="u-7",
            item=None,
            props={"previous_id": "anon-1", "user_hash": user_hash(IDENTIFY_SECRET, "u-8")},
        ),
        ev(
            "identify",
            user="u-7",
            item=None,
            props={"previous_id": "anon-1", "user_hash": user_hash("another-secret" * 3, "u-7")},
        ),
        ev("identify", user="u-7", item=None, props={"previous_id": "anon-1", "user_hash": good}),
        ev("product_view"),  # other types need no hash
    ]
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/v1/collect", json=events, headers=bearer(PK))
        body = await r.json()
    assert r.status == 202 and body["accepted"] == 2 and body["rejected"] == 4
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert sorted(reasons) == [0, 1, 2, 3]
    assert "needs props.user_hash" in reasons[0] and "needs props.user_hash" in reasons[1]
    assert reasons[2] == reasons[3] == "props.user_hash does not match the user id"
    assert [e.type for e in state.produced] == ["identify", "product_view"]
    assert state.produced[0].props["user_hash"] == good


def test_the_user_hash_is_the_hex_hmac_sha256_of_the_user_id() -> None:
    """What a shop's server in any language computes (Python's hmac here as the reference)."""
    expected = hmac.new(b"k" * 24, "user-é".encode(), hashlib.sha256).hexdigest()
    assert user_hash("k" * 24, "user-é") == expected
    assert len(expected) == 64


async def test_consent_for_another_user_is_never_granted(
    client: TestClient, state: MemoryState
) -> None:
    victim = ev("consent", user="someone-else", item=None, props={"email": True, "ads": False})
    r = await client.post("/v1/collect", json=[victim], headers=bearer(PK))
    assert (await r.json())["rejected"] == 1
    assert state.profile("someone-else") is None and not state.produced


async def test_preflight_from_a_listed_origin_is_answered(client: TestClient) -> None:
    asks = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    r = await client.options("/v1/collect", headers={"Origin": SHOP, **asks})
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == SHOP and r.headers["Vary"] == "Origin"
    assert r.headers["Access-Control-Allow-Methods"] == "POST"
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]


async def test_other_origins_are_refused_without_cors_headers(
    client: TestClient, state: MemoryState
) -> None:
    r = await client.options("/v1/collect", headers={"Origin": OTHER})
    assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    assert r.headers["Content-Type"].startswith("application/problem+json")
    headers = {"Origin": OTHER, **bearer(PK)}
    r = await client.post("/v1/collect", json=[ev("product_view")], headers=headers)
    assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    assert "PERSONA_COLLECT_ORIGINS" in (await r.json(content_type=None))["detail"]
    assert not state.produced  # refused before anything was produced
    metrics = await (await client.get("/metrics")).text()
    assert 'persona_collect_refused_total{reason="origin"} 2' in metrics


async def test_a_beacon_with_the_key_in_the_query_and_a_text_body_is_taken(
    client: TestClient, state: MemoryState
) -> None:
    body = json.dumps([ev("product_view", user="anon-b"), ev("add_to_cart", user="anon-b")])
    beacon = {"Content-Type": "text/plain;charset=UTF-8", "Origin": SHOP}
    r = await client.post(f"/v1/collect?key={PK}", data=body, headers=beacon)
    assert r.status == 202 and (await r.json())["accepted"] == 2
    assert r.headers["Access-Control-Allow-Origin"] == SHOP
    assert state.profile("anon-b") is not None and state.profile("anon-b").cart == {"A": 1}
    r = await client.post(f"/v1/collect?key={PK}x", data=body, headers=beacon)
    assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == SHOP
    r = await client.post(f"/v1/events?key={WRITE}", data=body)
    assert r.status == 401  # only /v1/collect takes a key in the query


async def test_a_key_given_twice_in_the_query_is_a_400_naming_it(
    client: TestClient, state: MemoryState
) -> None:
    """The first `?key=` was taken silently, whatever the second said."""
    body = json.dumps([ev("product_view", user="anon-k")])
    beacon = {"Content-Type": "text/plain;charset=UTF-8", "Origin": SHOP}
    for query in (f"key={PK}&key={PK}x", f"key={PK}&key={PK}"):
        r = await client.post(f"/v1/collect?{query}", data=body, headers=beacon)
        assert r.status == 400 and r.content_type == "application/problem+json"
        assert (await r.json())["parameter"] == "key"
        assert r.headers["Access-Control-Allow-Origin"] == SHOP  # the page can read why
    assert not state.produced


async def test_bad_bodies_are_4xx_problems(client: TestClient, state: MemoryState) -> None:
    too_many = json.dumps([ev("page_view", item=None)] * (MAX_EVENTS + 1))
    r = await client.post("/v1/collect", data=too_many, headers=bearer(PK))
    assert r.status == 413
    r = await client.post("/v1/collect", data=b"[" + b" " * MAX_BODY + b"]", headers=bearer(PK))
    assert r.status == 413
    r = await client.post("/v1/collect", data=b"{not json", headers=bearer(PK))
    assert r.status == 400 and "JSON" in (await r.json(content_type=None))["detail"]
    assert not state.produced


async def test_collect_requests_over_the_address_allowance_are_429(state: MemoryState) -> None:
    async with await _client(state, per_minute=3) as client:
        for _ in range(3):
            r = await client.post(
                "/v1/collect", json=[ev("page_view", item=None)], headers=bearer(PK)
            )
            assert r.status == 202
        r = await client.post(
            "/v1/collect", json=[ev("page_view", item=None)], headers={"Origin": SHOP, **bearer(PK)}
        )
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.headers["Access-Control-Allow-Origin"] == SHOP  # the page can read why
        assert len(state.produced) == 3
        r = await client.post(
            "/v1/events", json=[ev("page_view", item=None)], headers=bearer(WRITE)
        )
        assert r.status == 202  # the collect allowance is its own
        metrics = await (await client.get("/metrics")).text()
        assert 'persona_collect_refused_total{reason="limited"} 1' in metrics


async def test_the_tag_is_public_cached_and_versioned(client: TestClient) -> None:
    sdk = Sdk.load()
    r = await client.get("/v1/sdk.js")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert await r.read() == SDK_FILE.read_bytes()
    assert r.headers["ETag"] == f'"{sdk.version}"' and r.headers["X-Persona-Sdk-Version"]
    assert r.headers["Cache-Control"] == "public, max-age=86400"
    r = await client.get("/v1/sdk.js", headers={"If-None-Match": r.headers["ETag"]})
    assert r.status == 304
    r = await client.get(f"/v1/sdk.js?v={sdk.version}")
    assert r.status == 200 and "immutable" in r.headers["Cache-Control"]
    r = await client.get("/v1/sdk.js?v=0000000000000000")
    assert "immutable" not in r.headers["Cache-Control"]
    r = await client.get(f"/v1/sdk.js?v={sdk.version}&v=0000000000000000")  # the first was taken
    assert r.status == 400 and (await r.json())["parameter"] == "v"


def test_a_purchase_scope_needs_the_collect_scope() -> None:
    with pytest.raises(InvalidKey, match="without events:collect"):
        parse_entry(f"x:{PK}:events:collect-purchase", "entry 1")
    assert "events:collect" in parse_entry(f"x:{PK}:events:collect", "entry 1").scopes


@pytest.mark.parametrize("secret", [None, IDENTIFY_SECRET])
async def test_a_publishable_key_cannot_merge_a_customer_into_its_own_user(
    state: MemoryState, secret: str | None
) -> None:
    """The identify merge moves the previous id's whole profile into the user (and deletes it):
    a visitor logged in as u-attacker (the page holds their user hash) named a customer's user
    id as `previous_id` and took that customer's history, cart and purchases into their own
    profile, to see in their own blocks. A publishable key names only the tag's anonymous ids."""
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    options = ServingOptions(collect_origins=(SHOP,), identify_secret=secret)
    app = create_app(content, KeyRing.from_settings(KEYS, None), options)
    props: dict[str, Any] = {}
    if secret is not None:
        props["user_hash"] = user_hash(secret, "u-attacker")
    events = [
        ev("identify", user="u-attacker", item=None, props={"previous_id": "customer-42"} | props),
        ev("identify", user="u-attacker", item=None, props={"previous_id": "anon-b1e5"} | props),
    ]
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/v1/collect", json=events, headers=bearer(PK))
        body = await r.json()
        assert r.status == 202 and body["accepted"] == 1, body
        assert [e["index"] for e in body["errors"]] == [0]
        assert "anonymous id" in body["errors"][0]["reason"]
        assert [e.props["previous_id"] for e in state.produced] == ["anon-b1e5"]
        # the shop's server may still merge any id
        r = await client.post("/v1/events", json=events[:1], headers=bearer(WRITE))
        assert (await r.json())["accepted"] == 1


async def test_a_key_beyond_the_publishable_scopes_is_refused_in_the_url(
    client: TestClient, state: MemoryState
) -> None:
    """A URL lands in pages, histories and proxy logs: a key that can also write any user's
    events, read content or administer is refused as ?key= (403, naming the extra scopes), even
    though it holds events:collect; the same key in the Authorization header is taken."""
    body = json.dumps([ev("product_view", user="anon-q")])
    beacon = {"Content-Type": "text/plain;charset=UTF-8", "Origin": SHOP}
    r = await client.post(f"/v1/collect?key={BOTH}", data=body, headers=beacon)
    assert r.status == 403 and r.content_type == "application/problem+json"
    assert "content:read" in (await r.json())["detail"]
    assert state.profile("anon-q") is None
    r = await client.post("/v1/collect", data=body, headers={**beacon, **bearer(BOTH)})
    assert r.status == 202 and state.profile("anon-q") is not None
    r = await client.post(f"/v1/collect?key={PKP}", data=body, headers=beacon)
    assert r.status == 202  # both publishable scopes: taken


async def test_lookalike_and_null_origins_get_no_cors_and_nobody_gets_credentials(
    client: TestClient, state: MemoryState
) -> None:
    """Only an origin on the list, compared whole: not `null` (a sandboxed frame, a file), not the
    shop's name with a suffix or inside another host; and no answer allows credentials (the key
    travels in a header or the query, never a cookie)."""
    for origin in ("null", SHOP + ".evil.example", SHOP + ":8443", "https://evil.example"):
        r = await client.options("/v1/collect", headers={"Origin": origin})
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers, origin
    r = await client.options("/v1/collect", headers={"Origin": SHOP})
    assert r.status == 204 and "Access-Control-Allow-Credentials" not in r.headers
    r = await client.post(
        "/v1/collect", json=[ev("product_view")], headers={"Origin": SHOP, **bearer(PK)}
    )
    assert r.status == 202 and "Access-Control-Allow-Credentials" not in r.headers


def varies_on_origin(r: Any) -> bool:
    tokens = {t.strip().lower() for v in r.headers.getall("Vary", []) for t in v.split(",")}
    return "origin" in tokens or "*" in tokens


async def test_every_collect_answer_varies_on_origin(state: MemoryState) -> None:
    """A 403 to an unlisted origin had no `Vary: Origin` (nor an answer to a request without
    Origin), so a shared cache could give one origin's answer to another: a listed origin a
    cached 403, or an unlisted one a cached answer with the shop's CORS header."""
    async with await _client(state, per_minute=6) as client:
        body = [ev("page_view", item=None)]
        for origin in (OTHER, SHOP, None):
            headers = {"Origin": origin} if origin else {}
            r = await client.options("/v1/collect", headers=headers)
            assert r.status in (204, 403) and varies_on_origin(r), (origin, r.status, r.headers)
            r = await client.post("/v1/collect", json=body, headers={**headers, **bearer(PK)})
            assert r.status in (202, 403) and varies_on_origin(r), (origin, r.status, r.headers)
        r = await client.post("/v1/collect", json=body, headers={"Origin": SHOP, **bearer(PK)})
        assert r.status == 429 and varies_on_origin(r), r.headers
    async with await _client(state) as client:
        r = await client.post("/v1/collect", json=body, headers={"Origin": SHOP, **bearer(PK)})
        assert r.headers["Vary"].count("Origin") == 1  # said once (Accept-Encoding beside it)
        r = await client.post("/v1/collect?key=a&key=b", json=body, headers={"Origin": SHOP})
        assert r.status == 400 and varies_on_origin(r)
        r = await client.get("/v1/collect", headers={"Origin": SHOP, **bearer(PK)})
        assert r.status == 405 and varies_on_origin(r), r.headers
