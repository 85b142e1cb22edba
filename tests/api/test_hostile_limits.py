"""Callers without a valid key, floods of recipients and of unknown ids (issue 14, item 6): the
failed-authentication throttle on every server path, per-recipient rate-limit tokens, one shared
fallback entry for unknown users."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api import block_headers
from api.app import CONTENT, create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import LIMITER, MAX_USERS, THROTTLE, AuthThrottle, ServingOptions, TokenBucket
from api.testing import MemoryState
from engine.blocks import BlockInput, BlockPolicy, Renderer, assemble
from engine.catalog import Product
from engine.settings import SettingsError, load_settings
from models.registry import ModelSet
from tests.api.test_hot import HotTestServer
from tests.api.test_wire import _read_answer

GOOD = "good-key-0123456789abcdef"
KEYS = f"shop:{GOOD}:content:read;ro:ro-key-0123456789abcdefghij:events:write"
FAILURES = 5  # allowed per minute per address in these tests
BLOCK = "/v1/users/u1/blocks/recommendations"


def _state() -> MemoryState:
    state = MemoryState()
    for item in ModelSet.default().recs.popular[:20]:
        url = f"https://shop.example/{item}"
        state.put_product(Product(item, f"P {item}", url, url + ".jpg", 2.0, "GBP", "in_stock"))
    return state


def _app(rate_limits: dict[str, float] | None = None) -> web.Application:
    content = ContentService(_state(), ModelSet.default(), Renderer(), BlockPolicy())
    options = ServingOptions(rate_limits or {}, 10.0, auth_failures_per_minute=FAILURES)
    return create_app(content, KeyRing.from_settings(KEYS, None), options)


@pytest.fixture(params=["front", "middleware", "chain"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[TestClient]:
    """The three server paths: HotRunner (block GETs from the wire), hot_middleware, the chain."""
    app = _app()
    if request.param == "chain":
        from api.hot import hot_middleware

        app.middlewares.remove(hot_middleware)
    server = HotTestServer(app) if request.param == "front" else TestServer(app)
    async with TestClient(server) as c:
        yield c


def _app_of(client: TestClient) -> web.Application:
    app = client.app
    assert app is not None
    return app


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("path", [BLOCK, "/v1/users/u1/profile", "/v1/feeds/google.tsv"])
async def test_an_auth_flood_from_one_address_gets_429_while_a_valid_key_is_served(
    client: TestClient, path: str
) -> None:
    wrong = [_bearer(f"guess-{n:020d}") for n in range(FAILURES)] + [{}]
    statuses = [(await client.get(path, headers=h)).status for h in wrong]
    assert statuses == [401] * FAILURES + [429]
    refused = await client.get(path, headers=_bearer("yet-another-guess-0000000"))
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.content_type == "application/problem+json"
    assert (await refused.json())["status"] == 429
    good = await client.get(BLOCK, headers=_bearer(GOOD))
    assert good.status == 200  # a valid key from the throttled address is still served
    assert _app_of(client)[THROTTLE].throttled == 2
    metrics = await (await client.get("/metrics")).text()
    assert "persona_http_auth_throttled_total 2.0" in metrics
    assert "persona_http_rate_limited_total 0.0" in metrics
    assert "persona_render_errors_total 0.0" in metrics


async def test_the_wire_front_counts_each_failure_once(client: TestClient) -> None:
    """Raw keep-alive block GETs on one connection: the wire front hands refusals to aiohttp's
    path, which counts each once (counted twice, the third would already be 429)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    answers = []
    try:
        for n in range(FAILURES + 2):
            secret = GOOD if n == FAILURES + 1 else f"guess-{n:020d}"
            head = f"GET {BLOCK} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {secret}\r\n\r\n"
            writer.write(head.encode())
            answers.append(await asyncio.wait_for(_read_answer(reader), 10))
    finally:
        writer.close()
    statuses = [int(a.split(b" ", 2)[1]) for a in answers]
    assert statuses == [401] * FAILURES + [429, 200]


async def test_another_address_is_not_throttled(client: TestClient) -> None:
    for _ in range(FAILURES + 1):
        await client.get(BLOCK)
    assert (await client.get(BLOCK)).status == 429
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with (
        aiohttp.ClientSession(connector=connector) as other,
        other.get(f"http://{client.host}:{client.port}{BLOCK}") as r,
    ):
        assert r.status == 401


async def test_public_routes_and_ui_navigation_are_never_throttled(client: TestClient) -> None:
    for _ in range(FAILURES + 1):
        await client.get(BLOCK)
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/ui/preview")).status == 401  # a browser navigating: no key sent


async def test_a_wrong_key_on_the_ui_pages_counts_as_a_failure(client: TestClient) -> None:
    statuses = [
        (await client.get("/ui/preview", headers=_bearer(f"g-{n:022d}"))).status
        for n in range(FAILURES + 1)
    ]
    assert statuses == [401] * FAILURES + [429]
    assert (await client.get("/ui/preview", headers=_bearer(GOOD))).status == 200


async def test_a_valid_key_lacking_the_scope_is_not_a_failed_authentication(
    client: TestClient,
) -> None:
    other = _bearer("ro-key-0123456789abcdefghij")
    statuses = [(await client.get(BLOCK, headers=other)).status for _ in range(FAILURES + 3)]
    assert statuses == [403] * (FAILURES + 3)


def test_the_throttle_refills_and_keeps_a_bounded_table() -> None:
    throttle = AuthThrottle(per_minute=2, max_addresses=100)
    t = time.monotonic() + 1.0  # the clock the buckets read, from after they were made
    assert [throttle.fail("10.0.0.1", now=t) for _ in range(2)] == [0.0, 0.0]
    assert throttle.fail("10.0.0.1", now=t) == pytest.approx(30.0)
    assert throttle.fail("10.0.0.1", now=t + 30) == 0.0  # a minute refills per_minute failures
    for n in range(10_000):
        throttle.fail(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", now=t + 40)
    assert len(throttle) == 100
    # IPv6 by /64: one host's many addresses share a bucket
    assert [throttle.fail(f"2001:db8::{n:x}", now=t + 50) for n in range(1, 4)][-1] > 0
    assert throttle.fail("2001:db8:0:1::1", now=t + 50) == 0.0  # another /64


# -- per-recipient tokens --------------------------------------------------------------------------


def test_a_request_costs_its_recipients() -> None:
    bucket = TokenBucket(rate=1000.0, burst=1000.0)
    now = bucket.stamp
    assert bucket.take(now, cost=1000) == 0.0
    assert bucket.take(now, cost=1000) == pytest.approx(1.0)  # a whole second to refill
    assert bucket.take(now + 0.5, cost=1) == 0.0 and bucket.take(now + 0.5, cost=600) > 0
    slow = TokenBucket(rate=10.0)  # burst 10: a 1,000-recipient request passes on a full bucket
    now = slow.stamp
    assert slow.take(now, cost=1000) == 0.0
    assert slow.take(now + 1.0, cost=1) == pytest.approx(98.1)  # and the debt is paid first


@pytest.mark.parametrize("route", ["/v1/blocks:batch", "/v1/render"])
async def test_a_batch_of_1000_costs_1000_tokens(route: str) -> None:
    async with TestClient(TestServer(_app({"shop": 10.0}))) as client:
        ids = [f"user-{n}" for n in range(MAX_USERS)]
        own = (
            {"block": "recommendations"} if "batch" in route else {"template": "{{ user.user_id }}"}
        )
        body = {"user_ids": ids, **own}  # another route's field is an unknown parameter: 400
        first = await client.post(route, json=body, headers=_bearer(GOOD))
        assert first.status == 200
        second = await client.post(route, json=body, headers=_bearer(GOOD))
        assert second.status == 429
        assert int(second.headers["Retry-After"]) >= 90  # 1,000 tokens at 10/s
        assert (await client.get(BLOCK, headers=_bearer(GOOD))).status == 429
        assert _app_of(client)[LIMITER].limited == 2


async def test_duplicate_and_bad_recipients_are_not_charged_as_many() -> None:
    async with TestClient(TestServer(_app({"shop": 10.0}))) as client:
        same = {"block": "recommendations", "user_ids": ["u1"] * MAX_USERS}
        for _ in range(3):  # one distinct recipient each: 3 of the 10 tokens
            assert (await client.post("/v1/blocks:batch", json=same, headers=_bearer(GOOD))).ok
        broken = await client.post("/v1/blocks:batch", data=b"{", headers=_bearer(GOOD))
        assert broken.status == 400  # charged one token, answered by the handler
        assert _app_of(client)[LIMITER].limited == 0


@pytest.mark.parametrize("route", ["/v1/blocks:batch", "/v1/render"])
@pytest.mark.parametrize(
    "ids",
    [
        [f"user-{n}" for n in range(MAX_USERS + 1)],  # one too many
        ["x" * 10_240, *(f"user-{n}" for n in range(MAX_USERS - 1))],  # an id of 10 KB
        [*(f"user-{n}" for n in range(MAX_USERS - 1)), "bad\x00id"],  # a control character
        [*(f"user-{n}" for n in range(MAX_USERS - 1)), 7],  # not a string
    ],
    ids=["1001-ids", "10kb-id", "control-character", "not-a-string"],
)
async def test_a_refused_list_of_recipients_costs_one_token(route: str, ids: list[Any]) -> None:
    """A body the handler answers 400 costs one token, however many recipients it lists: a
    sender's mistake (1001 ids, one oversized id) must not lock its key out for 100 s."""
    async with TestClient(TestServer(_app({"shop": 10.0}))) as client:
        own = (
            {"block": "recommendations"} if "batch" in route else {"template": "{{ user.user_id }}"}
        )
        refused = await client.post(route, json={"user_ids": ids, **own}, headers=_bearer(GOOD))
        assert refused.status == 400
        assert refused.content_type == "application/problem+json"
        good = await client.post(route, json={"user_ids": ["u1"], **own}, headers=_bearer(GOOD))
        assert good.status == 200, await good.text()
        assert _app_of(client)[LIMITER].limited == 0


# -- unknown users share one fallback entry --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["html", "json"])
async def test_a_batch_of_1000_unknown_ids_leaves_one_cache_entry(fmt: str) -> None:
    async with TestClient(TestServer(_app())) as client:
        ids = [uuid.uuid4().hex for _ in range(MAX_USERS)]
        body = {"block": "recommendations", "format": fmt, "user_ids": ids}
        r = await client.post("/v1/blocks:batch", json=body, headers=_bearer(GOOD))
        assert r.status == 200
        results = (await r.json())["results"]
        cache = _app_of(client)[CONTENT].cache
        assert len(cache) == 1
        assert all(results[uid]["fallback"] for uid in ids)
        if fmt == "json":  # every user still gets their own id in the document
            assert all(json.loads(results[uid]["content"])["user_id"] == uid for uid in ids)
        render = {"template": "{{ blocks.recommendations }}", "user_ids": ids}
        r = await client.post("/v1/render", json=render, headers=_bearer(GOOD))
        assert r.status == 200 and len(cache) <= 2


@pytest.mark.parametrize("fmt", ["html", "json"])
@pytest.mark.parametrize("block", ["recommendations", "cart_reminder", "winback"])
@pytest.mark.parametrize("user_id", ["nobody", "a<b>&\"c'", "ünïcödé-ü", "persona"])
def test_the_shared_fallback_is_the_block_rendered_for_the_user(
    fmt: str, block: str, user_id: str
) -> None:
    state = _state()
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    # the shared entry exists first, its headers built (api/block_headers.py keeps them)
    assert block_headers.headers(content.block("someone-else", block, fmt))
    served = content.block(user_id, block, fmt)
    popular = content.popular()
    direct = assemble(
        BlockInput(block, fmt, user_id, None, None, [], {}, popular),
        state.product,
        BlockPolicy(),
        Renderer(),
    )
    assert (served.content, served.etag, served.user_id) == (
        direct.content,
        direct.etag,
        user_id,
    )
    assert served.body == direct.body
    assert block_headers.headers(served) == block_headers.headers(direct)
    assert block_headers.header_lines(served, True) == block_headers.header_lines(direct, True)


# -- secrets of at least 24 characters -------------------------------------------------------------

SHORT = "only-23-characters-long"


def test_a_short_webhook_secret_stops_start_up_without_showing_it() -> None:
    env = {"PERSONA_WEBHOOK_URLS": "https://hooks.example/x", "PERSONA_WEBHOOK_SECRET": SHORT}
    with pytest.raises(SettingsError) as refused:
        load_settings(env=env)
    assert "PERSONA_WEBHOOK_SECRET" in str(refused.value) and SHORT not in str(refused.value)
    assert load_settings(env={**env, "PERSONA_WEBHOOK_SECRET": SHORT + "x"}).webhook_secret


def test_persona_run_refuses_a_short_key_at_start_without_showing_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    env["PERSONA_API_KEYS"] = f"shop:{GOOD}:content:read;esp:{SHORT}:content:read"
    done = subprocess.run(
        [sys.executable, "-m", "persona", "run", "--data-dir", str(tmp_path), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "PERSONA_API_KEYS entry 2" in done.stderr and "'esp'" in done.stderr
    assert SHORT not in done.stdout + done.stderr


@pytest.mark.parametrize("expect", ["+75,?2'FV$", "100-continue", "something-else"])
async def test_an_expect_header_never_turns_into_a_plain_text_417(
    client: TestClient, expect: str
) -> None:
    """An unknown expectation is ignored (RFC 9110 allows it): the request is answered as usual,
    a refusal with a problem body; aiohttp answered a plain-text 417 the API document lacks (a
    schemathesis find)."""
    good = await client.get(BLOCK, headers={**_bearer(GOOD), "Expect": expect})
    assert good.status == 200
    bad = await client.get(BLOCK, headers={**_bearer("nope-0123456789abcdefgh"), "Expect": expect})
    assert bad.status == 401 and bad.content_type == "application/problem+json"
    rules = await client.get("/v1/rules", headers={**_bearer(GOOD), "Expect": expect})
    assert rules.status == 403 and rules.content_type == "application/problem+json"


async def test_100_continue_still_lets_a_body_in(client: TestClient) -> None:
    event = {"event_id": "x1", "type": "product_view", "user_id": "u9", "ts": 1_700_000_000_000,
             "item_id": "A"}  # fmt: skip
    r = await client.post(
        "/v1/events", json=[event], headers=_bearer("ro-key-0123456789abcdefghij"), expect100=True
    )
    assert r.status == 202, await r.text()


@pytest.mark.parametrize("route", ["/v1/blocks:batch", "/v1/render"])
@pytest.mark.parametrize(
    "mistake",
    [
        {"user_ids": [f"user-{n}" for n in range(MAX_USERS + 1)]},  # over the bound
        {"user_ids": ["u1"], "deadline_ms": 0},  # a bad deadline
        {"user_ids": ["u1"], "n": "many"},  # a bad block parameter
    ],
    ids=["1001-ids", "bad-deadline", "bad-parameter"],
)
async def test_a_key_in_debt_still_gets_the_400_of_a_misshapen_body(
    route: str, mistake: dict[str, Any]
) -> None:
    """A body refused for its shape is answered its 400 before the rate limit: a key in debt
    (a 1,000-recipient batch at 10/s) sending 1,001 ids was answered 429 with a Retry-After of
    ~100 s, and learnt only then that the list was too long. Not charged either; a request
    without a key is still a 401."""
    async with TestClient(TestServer(_app({"shop": 10.0}))) as client:
        own = (
            {"block": "recommendations"} if "batch" in route else {"template": "{{ user.user_id }}"}
        )
        full = {"user_ids": [f"user-{n}" for n in range(MAX_USERS)], **own}
        assert (await client.post(route, json=full, headers=_bearer(GOOD))).status == 200
        refused = await client.post(route, json={**own, **mistake}, headers=_bearer(GOOD))
        assert refused.status == 400, await refused.text()
        assert refused.content_type == "application/problem+json"
        assert "Retry-After" not in refused.headers
        assert _app_of(client)[LIMITER].limited == 0
        unknown = await client.post(route, json={**own, **mistake})
        assert unknown.status == 401
        good = await client.post(route, json={"user_ids": ["u1"], **own}, headers=_bearer(GOOD))
        assert good.status == 429  # the debt is still there
        if route == "/v1/blocks:batch":
            fmt = await client.post(route, json={**full, "format": "text"}, headers=_bearer(GOOD))
            assert fmt.status == 400
