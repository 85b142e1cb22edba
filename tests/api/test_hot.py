"""The hot path (api/hot.py) answers block GETs exactly as the full middleware chain does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import METRICS, create_app
from api.auth import KeyRing
from api.content import ContentService
from api.hot import hot_middleware
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.events import validate
from models.registry import ModelSet

T0 = 1_300_000_000_000
KEYS = "all:s3cret:content:read;nocontent:other:events:write;slow:slowsecret:content:read"

# (path, headers): every kind of answer the route gives
CASES = [
    ("/v1/users/u1/blocks/recommendations", {"Authorization": "Bearer s3cret"}),
    ("/v1/users/u1/blocks/recommendations?format=json", {"Authorization": "Bearer s3cret"}),
    ("/v1/users/nobody/blocks/recommendations", {"Authorization": "Bearer s3cret"}),
    ("/v1/users/u1/blocks/cart_reminder", {"Authorization": "Bearer s3cret"}),
    ("/v1/users/u1/blocks/recommendations", {}),
    ("/v1/users/u1/blocks/recommendations", {"Authorization": "Bearer wrong"}),
    ("/v1/users/u1/blocks/recommendations", {"Authorization": "Bearer other"}),
    ("/v1/users/u1/blocks/no_such_block", {"Authorization": "Bearer s3cret"}),
    ("/v1/users/u1/blocks/recommendations?format=xml", {"Authorization": "Bearer s3cret"}),
    ("/v1/users/" + "x" * 129 + "/blocks/recommendations", {"Authorization": "Bearer s3cret"}),
]


def _state() -> MemoryState:
    state = MemoryState()
    for item in [*ModelSet.default().recs.popular[:30], "A", "B"]:
        state.put_product(
            Product(item, f"P {item}", f"https://s.example/{item}", "", 2.0, "GBP", "in_stock")
        )
    for n, (kind, item) in enumerate([("product_view", "A"), ("add_to_cart", "B")]):
        state.apply(
            validate(
                {"event_id": f"e{n}", "type": kind, "user_id": "u1", "item_id": item, "ts": T0 + n}
            )
        )
    return state


async def _client(hot: bool) -> TestClient:
    content = ContentService(_state(), ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None), ServingOptions({"slow": 1.0}))
    if not hot:
        app.middlewares.remove(hot_middleware)
    return TestClient(TestServer(app))


@pytest.fixture
async def clients() -> AsyncIterator[tuple[TestClient, TestClient]]:
    async with await _client(True) as hot, await _client(False) as chain:
        yield hot, chain


def _comparable(headers: dict[str, str]) -> dict[str, str]:
    skip = ("date", "x-request-id", "server")
    return {k.lower(): v for k, v in headers.items() if k.lower() not in skip}


@pytest.mark.parametrize(("path", "headers"), CASES)
async def test_same_answer_as_the_chain(
    clients: tuple[TestClient, TestClient], path: str, headers: dict[str, str]
) -> None:
    hot, chain = clients
    a = await hot.get(path, headers=headers)
    b = await chain.get(path, headers=headers)
    assert (a.status, await a.read()) == (b.status, await b.read())
    assert _comparable(dict(a.headers)) == _comparable(dict(b.headers))
    assert a.headers["X-Request-Id"]


async def test_not_modified_and_rate_limit_and_request_id(
    clients: tuple[TestClient, TestClient],
) -> None:
    hot, _ = clients
    path = "/v1/users/u1/blocks/recommendations"
    first = await hot.get(path, headers={"Authorization": "Bearer s3cret", "X-Request-Id": "r-1"})
    assert first.status == 200 and first.headers["X-Request-Id"] == "r-1"
    etag = first.headers["ETag"]
    again = await hot.get(path, headers={"Authorization": "Bearer s3cret", "If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag
    slow = {"Authorization": "Bearer slowsecret"}
    statuses = [(await hot.get(path, headers=slow)).status for _ in range(3)]
    assert statuses[0] == 200 and 429 in statuses


async def test_hot_requests_are_counted(clients: tuple[TestClient, TestClient]) -> None:
    hot, _ = clients
    before = dict(hot.server.app[METRICS])
    for _ in range(3):
        await hot.get(
            "/v1/users/u1/blocks/recommendations", headers={"Authorization": "Bearer s3cret"}
        )
    await hot.get("/v1/users/u1/blocks/recommendations")
    after = hot.server.app[METRICS]
    assert after["requests"] - before.get("requests", 0) == 4
    assert after["status_2xx"] - before.get("status_2xx", 0) == 3
    metrics = await (await hot.get("/metrics")).text()
    line = next(
        x for x in metrics.splitlines()
        if x.startswith("persona_http_requests_total{")
        and 'route="/v1/users/{user_id}/blocks/{block}"' in x and 'status="200"' in x
    )  # fmt: skip
    assert float(line.rsplit(" ", 1)[1]) == 3.0


async def test_a_failing_lookup_answers_500_problem_and_is_counted(
    clients: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    hot, _ = clients
    import api.hot

    def broken(request: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.hot, "block_answer", broken)
    r = await hot.get(
        "/v1/users/u1/blocks/recommendations", headers={"Authorization": "Bearer s3cret"}
    )
    assert r.status == 500
    assert r.content_type == "application/problem+json"
    assert hot.server.app[METRICS]["status_5xx"] >= 1


async def test_not_modified_and_fallback_headers_match_the_chain(
    clients: tuple[TestClient, TestClient],
) -> None:
    hot, chain = clients
    auth = {"Authorization": "Bearer s3cret"}
    for path in ("/v1/users/u1/blocks/recommendations", "/v1/users/nobody/blocks/winback"):
        etag = (await hot.get(path, headers=auth)).headers["ETag"]
        for extra in ({"If-None-Match": etag}, {"If-None-Match": f'"x", W/{etag}'}):
            a = await hot.get(path, headers={**auth, **extra})
            b = await chain.get(path, headers={**auth, **extra})
            assert a.status == b.status == 304
            assert _comparable(dict(a.headers)) == _comparable(dict(b.headers))


async def test_hot_and_chain_count_the_same_metrics(
    clients: tuple[TestClient, TestClient],
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    auth = {"Authorization": "Bearer s3cret"}
    figures = []
    for client in clients:
        for path, headers in CASES:
            await client.get(path, headers=headers)
        etag = (await client.get(CASES[0][0], headers=auth)).headers["ETag"]
        await client.get(CASES[0][0], headers={**auth, "If-None-Match": etag})
        text = await (await client.get("/metrics")).text()
        found = {f.name: f.samples for f in text_string_to_metric_families(text)}
        figures.append(
            {
                name: sorted(
                    (s.name, tuple(sorted(s.labels.items())), s.value)
                    for s in found[name]
                    if not s.name.endswith(("_created", "_sum"))
                    and s.labels.get("route") != "/metrics"
                )
                for name in ("persona_http_requests", "persona_blocks_served")
            }
        )
        buckets = [
            s
            for s in found["persona_http_request_duration_seconds"]
            if s.name.endswith("_count")
            and s.labels["route"] == "/v1/users/{user_id}/blocks/{block}"
        ]
        assert buckets[0].value == len(CASES) + 2
    assert figures[0] == figures[1]
