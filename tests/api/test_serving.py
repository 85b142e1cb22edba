"""Send-time serving over the in-memory state: batch, render, feeds, Basic auth, rate limits,
timeouts, never-5xx blocks."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import logging
from collections.abc import AsyncIterator

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import CONTENT, create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions, TokenBucket
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.events import validate
from models.registry import ModelSet

T0 = 1_300_000_000_000
AUTH = {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}
KEYS = (
    "all:s3cret-kkkkkkkkkkkkkkkkk:content:read,events:write,feeds:read,privacy:admin;"
    "ro:ro-kkkkkkkkkkkkkkkkkkkkk:content:read;feeds:feedsecret-kkkkkkkkkkkkk:feeds:read;slow:slowsecret-kkkkkkkkkkkkk:content:read"
)


def product(item_id: str, availability: str = "in_stock") -> Product:
    return Product(
        item_id,
        f"Product {item_id} <b>",
        f"https://shop.example.com/p/{item_id}",
        f"https://shop.example.com/i/{item_id}.jpg",
        2.5,
        "GBP",
        availability,
    )


@pytest.fixture
def state() -> MemoryState:
    s = MemoryState()
    for item in ModelSet.default().recs.popular[:50]:
        s.put_product(product(item))
    for item in ("A", "B", "C"):
        s.put_product(product(item))
    return s


async def _client(state: MemoryState, options: ServingOptions | None = None) -> TestClient:
    keys = KeyRing.from_settings(KEYS, None)
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    return TestClient(TestServer(create_app(content, keys, options)))


@pytest.fixture
async def client(state: MemoryState) -> AsyncIterator[TestClient]:
    async with await _client(state, ServingOptions({"slow": 2.0}, 0.5)) as c:
        yield c


async def _cart(state: MemoryState, user: str, item: str = "A") -> None:
    await state.produce(
        [
            validate(
                {
                    "event_id": f"{user}-1",
                    "type": "add_to_cart",
                    "user_id": user,
                    "ts": T0,
                    "item_id": item,
                }
            )
        ]
    )


async def test_batch_answers_every_user_in_json(client: TestClient, state: MemoryState) -> None:
    await _cart(state, "u1")
    body = {"block": "cart_reminder", "format": "json", "user_ids": ["u1", "new", "u1"]}
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    assert r.status == 200
    results = (await r.json())["results"]
    assert set(results) == {"u1", "new"}
    assert results["u1"]["fallback"] is False and results["new"]["fallback"] is True
    assert json.loads(results["u1"]["content"])["items"][0]["item_id"] == "A"
    single = await client.get("/v1/users/u1/blocks/cart_reminder?format=json", headers=AUTH)
    assert single.headers["ETag"] == results["u1"]["etag"]
    assert await single.text() == results["u1"]["content"]


async def test_batch_msgpack_both_ways(client: TestClient) -> None:
    body = msgpack.packb({"block": "recommendations", "user_ids": [f"u{i}" for i in range(1000)]})
    r = await client.post(
        "/v1/blocks:batch",
        data=body,
        headers={**AUTH, "Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    assert r.status == 200 and r.content_type == "application/msgpack"
    results = msgpack.unpackb(await r.read())["results"]
    assert len(results) == 1000 and all(v["content"].startswith("<") for v in results.values())


@pytest.mark.parametrize("accept", ["application/msgpack", "application/json"])
async def test_a_batch_written_in_slices_is_the_whole_payload(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, accept: str
) -> None:
    import api.batch
    from api.batch import encode_results

    monkeypatch.setattr(api.batch, "WRITE_CHUNK", 1000)  # many slices, the last one partial
    ids = [f"u{i}" for i in range(300)]
    r = await client.post(
        "/v1/blocks:batch",
        json={"block": "recommendations", "user_ids": ids},
        # as sent: aiohttp's client accepts gzip unless told otherwise (and the answer is over
        # api.encodings.COMPRESS_FROM)
        headers={**AUTH, "Accept": accept, "Accept-Encoding": "identity"},
    )
    raw = await r.read()
    content = client.server.app[CONTENT]
    expected = encode_results(
        ids, content.blocks(ids, "recommendations", "html"), "msgpack" in accept
    )
    assert r.status == 200 and r.content_type == accept and r.headers["X-Request-Id"]
    assert len(raw) > 10 * 1000 and len(raw) % 1000 != 0
    assert int(r.headers["Content-Length"]) == len(raw) and raw == expected


@pytest.mark.parametrize(
    "body",
    [
        {"block": "nope", "user_ids": ["u"]},
        {"block": "winback", "format": "xml", "user_ids": ["u"]},
        {"block": "winback", "user_ids": []},
        {"block": "winback", "user_ids": ["u"] * 1001},
        {"block": "winback", "user_ids": [1]},
        {"block": "winback", "user_ids": ["x" * 129]},
        ["not", "an", "object"],
    ],
)
async def test_batch_rejects_bad_bodies(client: TestClient, body: object) -> None:
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    assert r.status == 400 and (await r.json(content_type=None))["status"] == 400


async def test_batch_rejects_undecodable_body(client: TestClient) -> None:
    r = await client.post("/v1/blocks:batch", data=b"\xc1garbage", headers=AUTH)
    assert r.status == 400


TEMPLATE = """<html><body><p>Hi {{ user.first_name | default("there") }} ({{ user.user_id }})</p>
{{ blocks.recommendations }}{% if user.cart_items %}{{ blocks.cart_reminder }}{% endif %}
{{ blocks.winback }}</body></html>"""


async def test_render_one_message_per_user(client: TestClient, state: MemoryState) -> None:
    await _cart(state, "u1")
    body = {
        "template": TEMPLATE,
        "user_ids": ["u1", "<script>"],
        "data": {"u1": {"first_name": "<Ada>"}},
    }
    r = await client.post("/v1/render", json=body, headers=AUTH)
    assert r.status == 200
    payload = await r.json()
    assert payload["errors"] == 0
    ada = payload["results"]["u1"]
    assert "Hi &lt;Ada&gt; (u1)" in ada["content"]  # sender data is escaped...
    assert "Still in your cart" in ada["content"]  # ...block HTML is not escaped twice
    assert "<table" in ada["content"] and "&lt;table" not in ada["content"]
    assert "cart_reminder" not in ada["fallback_blocks"]
    stranger = payload["results"]["<script>"]
    assert "(&lt;script&gt;)" in stranger["content"] and stranger["fallback"] is True
    assert "Still in your cart" not in stranger["content"]


async def test_render_template_errors(state: MemoryState, caplog: pytest.LogCaptureFixture) -> None:
    # a request timeout a loaded machine cannot spend, so that only the recipient whose data
    # breaks the template gets the fallback (not the next one, for a spent time budget)
    async with await _client(state, ServingOptions({}, 60.0)) as client:
        await _render_template_errors(client, caplog)


async def _render_template_errors(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    r = await client.post(
        "/v1/render", json={"template": "{% if %}", "user_ids": ["u"]}, headers=AUTH
    )
    assert r.status == 400 and "does not compile" in (await r.json(content_type=None))["detail"]
    # failing only with the recipient's data: that recipient gets the fallback rendering
    template = "{{ 1 // user.orders if user.known else 'x' }}{{ blocks.recommendations }}"
    await client.post(
        "/v1/events",
        headers=AUTH,
        json=[
            {"event_id": "e-v", "type": "product_view", "user_id": "v", "ts": T0, "item_id": "A"}
        ],
    )
    with caplog.at_level(logging.WARNING, "persona.render"):
        r = await client.post(
            "/v1/render", json={"template": template, "user_ids": ["v", "w"]}, headers=AUTH
        )
    payload = await r.json()
    assert r.status == 200 and payload["errors"] == 1, payload
    v = payload["results"]["v"]
    assert v["fallback"] is True and "ZeroDivisionError" in v["error"] and "<table" in v["content"]
    assert payload["results"]["w"]["error"] is None
    assert any("template failed" in m for m in caplog.messages)


async def test_render_sandbox_blocks_internals(client: TestClient) -> None:
    template = "{{ user.__class__.__mro__ }}{{ blocks.__class__.__init__.__globals__ }}"
    r = await client.post(
        "/v1/render", json={"template": template, "user_ids": ["u"]}, headers=AUTH
    )
    payload = await r.json()
    assert r.status == 200
    assert "object" not in (payload["results"]["u"]["content"] or "")


@pytest.mark.parametrize("name", ["google.tsv", "google.xml", "meta.csv", "criteo.csv"])
async def test_feeds_list_the_catalog(client: TestClient, state: MemoryState, name: str) -> None:
    r = await client.get(f"/v1/feeds/{name}", headers=AUTH)
    assert r.status == 200
    text = await r.text()
    for item in ("A", "B", "C"):
        assert f"https://shop.example.com/p/{item}" in text
    if name.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == len(state.catalog) and rows[0]["condition"] == "new"


async def test_feeds_accept_http_basic_with_the_key_as_password(client: TestClient) -> None:
    basic = "Basic " + base64.b64encode(b"merchant-center:feedsecret-kkkkkkkkkkkkk").decode()
    r = await client.get("/v1/feeds/google.tsv", headers={"Authorization": basic})
    assert r.status == 200
    r = await client.get("/v1/feeds/google.tsv")
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    wrong = "Basic " + base64.b64encode(b"x:nope").decode()
    assert (await client.get("/v1/feeds/meta.csv", headers={"Authorization": wrong})).status == 401
    # Basic is for feeds only
    r = await client.get("/v1/users/u/blocks/winback", headers={"Authorization": basic})
    assert r.status == 401
    assert (await client.get("/v1/feeds/bing.csv", headers=AUTH)).status == 404
    r = await client.get(
        "/v1/feeds/google.tsv", headers={"Authorization": "Bearer ro-kkkkkkkkkkkkkkkkkkkkk"}
    )
    assert r.status == 403


async def test_rate_limit_answers_429_with_retry_after(client: TestClient) -> None:
    slow = {"Authorization": "Bearer slowsecret-kkkkkkkkkkkkk"}
    statuses = [
        (await client.get("/v1/users/u/blocks/winback", headers=slow)).status for _ in range(4)
    ]
    assert statuses[:2] == [200, 200] and statuses[-1] == 429
    r = await client.get("/v1/users/u/blocks/winback", headers=slow)
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    # other keys are not limited
    for _ in range(10):
        assert (await client.get("/v1/users/u/blocks/winback", headers=AUTH)).status == 200


def test_token_bucket_refills() -> None:
    bucket = TokenBucket(rate=2.0)
    now = bucket.stamp
    assert bucket.take(now) == 0.0 and bucket.take(now) == 0.0
    assert bucket.take(now) == pytest.approx(0.5)
    assert bucket.take(now + 0.5) == 0.0


async def test_slow_requests_time_out_with_503(client: TestClient) -> None:
    async def sleepy(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    app = client.server.app
    content = app[CONTENT]
    app2 = create_app(content, KeyRing.from_settings(KEYS, None), ServingOptions({}, 0.2))
    app2.router.add_get("/v1/slow", sleepy)
    async with TestClient(TestServer(app2)) as c2:
        r = await c2.get("/v1/slow", headers=AUTH)
        assert r.status == 503 and r.headers["Retry-After"] == "1"


async def test_a_failing_state_answers_the_fallback(
    client: TestClient, state: MemoryState, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(user_id: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(state, "profile", broken)
    r = await client.get("/v1/users/u/blocks/recommendations", headers=AUTH)
    assert r.status == 200 and r.headers["X-Persona-Fallback"] == "1"
    r = await client.post(
        "/v1/blocks:batch", json={"block": "winback", "user_ids": ["a", "b"]}, headers=AUTH
    )
    assert r.status == 200
    assert all(v["fallback"] for v in (await r.json())["results"].values())


async def test_denied_admin_requests_are_audited(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "persona.audit"):
        r = await client.get(
            "/v1/users/u/export", headers={"Authorization": "Bearer ro-kkkkkkkkkkkkkkkkkkkkk"}
        )
    assert r.status == 403
    record = json.loads(caplog.messages[-1])
    assert record["action"] == "denied" and record["status"] == 403


async def test_oversized_bodies_are_refused(client: TestClient) -> None:
    r = await client.post("/v1/render", data=b"x" * (11 * 1024 * 1024), headers=AUTH)
    assert r.status == 413


async def test_model_changes_are_audited(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "persona.audit"):
        await client.post("/v1/models/churn/activate", json={"version": "x"}, headers=AUTH)
    record = json.loads(caplog.messages[-1])
    assert (
        record["action"] in ("models", "denied") and record["path"] == "/v1/models/churn/activate"
    )


def test_batch_encoding_from_cached_entries_equals_encoding_the_whole_payload(
    state: MemoryState,
) -> None:
    from aiohttp.test_utils import make_mocked_request

    from api.batch import MSGPACK, encode_results, respond

    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    ids = ["u1", "nobody", "ünïcode"]
    blocks = content.blocks(ids, "recommendations", "html")
    payload = {"results": {u: b.entry() for u, b in zip(ids, blocks, strict=True)}}
    for accept, as_msgpack in (("application/json", False), (MSGPACK, True)):
        request = make_mocked_request("POST", "/v1/blocks:batch", headers={"Accept": accept})
        assert encode_results(ids, blocks, as_msgpack) == respond(request, payload).body


@pytest.mark.parametrize(
    "key",
    [AUTH, {"Authorization": "Bearer slowsecret-kkkkkkkkkkkkk"}],
    ids=["unlimited", "limited"],
)
async def test_a_trickled_body_times_out_with_503(state: MemoryState, key: dict[str, str]) -> None:
    """A batch body sent a few bytes at a time is cut at the request timeout (0.5 s here), for a
    rate-limited key too (whose body the rate limit reads first, to count the recipients)."""
    async with await _client(state, ServingOptions({"slow": 100.0}, 0.5)) as c:
        body = b'{"user_ids": ["u1", "u2"], "block": "recommendations"}'
        head = (
            f"POST /v1/blocks:batch HTTP/1.1\r\nHost: p\r\n{next(iter(key))}: "
            f"{next(iter(key.values()))}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection(c.host, c.port)
        writer.write(head)
        start = asyncio.get_running_loop().time()
        answer = b""
        for n in range(len(body)):
            writer.write(body[n : n + 1])
            try:
                answer = await asyncio.wait_for(reader.read(1000), 0.1)
                break
            except TimeoutError:
                continue
        writer.close()
        took = asyncio.get_running_loop().time() - start
        assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
        assert b"Retry-After: 1" in answer and took < 3


def _bulky(item_id: str) -> Product:
    """A product as large as the catalog lets it be where it shows in a block: a 500-character
    title of `&` (5 bytes each, escaped in HTML) and 2,048-character URLs of CJK text (9 bytes a
    character, percent-encoded): ~40 KB of a block's HTML an item, past 1 MiB at 50 items."""
    from engine.catalog import validate_product

    return validate_product(
        {
            "item_id": item_id,
            "title": "&" * 500,
            "url": f"https://shop.example.com/{item_id}/" + "\u4e2d" * 1990,
            "image_url": "https://shop.example.com/" + "\u6587" * 2000,
            "price": 1.5,
            "currency": "EUR",
        }
    )


async def test_a_block_past_the_output_budget_is_the_fallback_with_the_items_that_fit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """n=50 of the largest items renders past the sandbox's 1 MiB of output, personalized and
    best-sellers alike: it was answered with the empty hard-coded block. It is the fallback
    (the best-sellers) with as many of its items as fit, counted and logged. (An ad's json:
    an e-mail block leaves such items out, next test.)"""
    fmt = "json"
    state = MemoryState()
    popular = ModelSet.default().recs.popular[:60]
    for item in popular:
        state.put_product(_bulky(item))
    async with await _client(state, ServingOptions({}, 60.0)) as client:
        with caplog.at_level(logging.WARNING, "persona"):
            r = await client.get(
                f"/v1/users/u1/blocks/recommendations?n=50&format={fmt}", headers=AUTH
            )
        body = await r.read()
        assert r.status == 200 and r.headers["X-Persona-Fallback"] == "1"
        assert 0 < len(body) <= 1 << 20
        shown = [item for item in popular if f"/{item}/" in body.decode()]
        assert len(shown) >= 10, len(shown)
        assert len(json.loads(body)["items"]) == len(shown)
        assert any("output budget" in m for m in caplog.messages)
        r = await client.post(
            "/v1/blocks:batch",
            json={"block": "recommendations", "format": fmt, "user_ids": ["u1"], "n": 50},
            headers=AUTH,
        )
        entry = (await r.json())["results"]["u1"]
        assert entry["fallback"] is True and f"/{popular[0]}/" in entry["content"]
        metrics = await (await client.get("/metrics")).text()
        # one render: the batch's block is the one rendered for the GET, from the block cache
        assert "persona_blocks_oversized_total 1.0" in metrics


async def test_an_email_block_leaves_out_items_whose_links_cannot_fit_a_line() -> None:
    """The same items in an e-mail (html) block: none of their links or titles fits a line of
    SMTP's 998 octets (engine.blocks.fits_email), so none is shown, the block stays within
    the limit and is not past the output budget."""
    state = MemoryState()
    popular = ModelSet.default().recs.popular[:60]
    for item in popular:
        state.put_product(_bulky(item))
    async with await _client(state, ServingOptions({}, 60.0)) as client:
        r = await client.get("/v1/users/u1/blocks/recommendations?n=50&format=html", headers=AUTH)
        body = await r.read()
        assert r.status == 200 and r.headers["X-Persona-Fallback"] == "1"
        assert not [item for item in popular if f"/{item}/" in body.decode()]
        assert max(len(line) for line in body.split(b"\n")) <= 998
        metrics = await (await client.get("/metrics")).text()
        assert "persona_blocks_oversized_total 0.0" in metrics
