"""The hot path (api/hot.py) answers block GETs exactly as the full middleware chain does: both
its layers, `Front` in front of the application (`HotRunner`, what readers serve with) and
`hot_middleware` (plain runners)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.hot import Front, HotRunner, hot_middleware
from api.limits import ServingOptions
from api.observability import TELEMETRY
from api.protocol import ProblemRunner
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.events import validate
from models.experiments import Experiment
from models.registry import ModelSet

T0 = 1_300_000_000_000
KEYS = (
    "all:s3cret-kkkkkkkkkkkkkkkkk:content:read;nocontent:other-kkkkkkkkkkkkkkkkkk:events:write;"
    "slow:slowsecret-kkkkkkkkkkkkk:content:read"
)

# (path, headers): every kind of answer the route gives
CASES = [
    ("/v1/users/u1/blocks/recommendations", {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}),
    (
        "/v1/users/u1/blocks/recommendations?format=json",
        {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"},
    ),
    (
        "/v1/users/nobody/blocks/recommendations",
        {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"},
    ),
    ("/v1/users/u1/blocks/cart_reminder", {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}),
    ("/v1/users/u1/blocks/recommendations", {}),
    ("/v1/users/u1/blocks/recommendations", {"Authorization": "Bearer wrong"}),
    ("/v1/users/u1/blocks/recommendations", {"Authorization": "Bearer other-kkkkkkkkkkkkkkkkkk"}),
    ("/v1/users/u1/blocks/no_such_block", {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}),
    (
        "/v1/users/u1/blocks/recommendations?format=xml",
        {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"},
    ),
    (
        "/v1/users/" + "x" * 129 + "/blocks/recommendations",
        {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"},
    ),
    # block parameters (engine.params): the front hands them to the application
    (
        "/v1/users/u1/blocks/recommendations?format=json&n=2&exclude=A",
        {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"},
    ),
    (
        "/v1/users/u1/blocks/recommendations?n=0",
        {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"},
    ),
    ("/v1/users/u1/blocks/recommendations?n=2", {}),
    (  # `format` twice: a 400 the application answers
        "/v1/users/u1/blocks/recommendations?format=json&format=html",
        {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"},
    ),
    (
        "/v1/users/nobody/blocks/similar_items?context_item=A&locale=en-GB",
        {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"},
    ),
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


class ProblemTestServer(TestServer):
    """A test server run by `ProblemRunner`: the application with connections whose refusals are
    problem bodies, as served without the front."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return ProblemRunner(self.app, **kwargs)


class HotTestServer(TestServer):
    """A test server run by `HotRunner`, as the reader processes serve."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return HotRunner(self.app, **kwargs)


def _app() -> web.Application:
    content = ContentService(_state(), ModelSet.default(), Renderer(), BlockPolicy())
    return create_app(content, KeyRing.from_settings(KEYS, None), ServingOptions({"slow": 1.0}))


async def _client(mode: str) -> TestClient:
    """mode: "front" (HotRunner), "middleware" (hot_middleware only), "chain" (neither)."""
    app = _app()
    if mode == "front":
        return TestClient(HotTestServer(app))
    if mode == "chain":
        app.middlewares.remove(hot_middleware)
    return TestClient(ProblemTestServer(app))


@pytest.fixture(params=["front", "middleware"])
async def clients(request: pytest.FixtureRequest) -> AsyncIterator[tuple[TestClient, TestClient]]:
    """(the hot path in one of its layers, the full chain)."""
    async with await _client(request.param) as hot, await _client("chain") as chain:
        yield hot, chain


@pytest.fixture
async def front() -> AsyncIterator[tuple[TestClient, TestClient]]:
    """(HotRunner's server, the full chain)."""
    async with await _client("front") as hot, await _client("chain") as chain:
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
    first = await hot.get(
        path, headers={"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk", "X-Request-Id": "r-1"}
    )
    assert first.status == 200 and first.headers["X-Request-Id"] == "r-1"
    etag = first.headers["ETag"]
    again = await hot.get(
        path, headers={"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk", "If-None-Match": etag}
    )
    assert again.status == 304 and again.headers["ETag"] == etag
    slow = {"Authorization": "Bearer slowsecret-kkkkkkkkkkkkk"}
    statuses = [(await hot.get(path, headers=slow)).status for _ in range(3)]
    assert statuses[0] == 200 and 429 in statuses


async def test_hot_requests_are_counted(clients: tuple[TestClient, TestClient]) -> None:
    hot, _ = clients
    telemetry = hot.server.app[TELEMETRY]
    before = telemetry.requests
    for _ in range(3):
        await hot.get(
            "/v1/users/u1/blocks/recommendations",
            headers={"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"},
        )
    await hot.get("/v1/users/u1/blocks/recommendations")
    assert telemetry.requests - before == 4  # the dashboard's figure
    metrics = await (await hot.get("/metrics")).text()
    assert block_requests(metrics, "200") == 3.0 and block_requests(metrics, "401") == 1.0


def block_requests(metrics: str, status: str) -> float:
    """persona_http_requests_total of the block route with `status` in a /metrics text."""
    line = next(
        x for x in metrics.splitlines()
        if x.startswith("persona_http_requests_total{")
        and 'route="/v1/users/{user_id}/blocks/{block}"' in x and f'status="{status}"' in x
    )  # fmt: skip
    return float(line.rsplit(" ", 1)[1])


async def test_a_failing_lookup_answers_500_problem_and_is_counted(
    clients: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    hot, _ = clients
    import api.block_routes

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.block_routes, "block_lookup", broken)  # `decide`'s, for both
    r = await hot.get(
        "/v1/users/u1/blocks/recommendations",
        headers={"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"},
    )
    assert r.status == 500
    assert r.content_type == "application/problem+json"
    assert block_requests(await (await hot.get("/metrics")).text(), "500") >= 1


async def test_not_modified_and_fallback_headers_match_the_chain(
    clients: tuple[TestClient, TestClient],
) -> None:
    hot, chain = clients
    auth = {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}
    for path in ("/v1/users/u1/blocks/recommendations", "/v1/users/nobody/blocks/winback"):
        etag = (await hot.get(path, headers=auth)).headers["ETag"]
        # `*` matches any current representation (RFC 9110 13.1.2), and every block has one
        for extra in (
            {"If-None-Match": etag},
            {"If-None-Match": f'"x", W/{etag}'},
            {"If-None-Match": "*"},
            {"If-None-Match": '"x", *'},
        ):
            a = await hot.get(path, headers={**auth, **extra})
            b = await chain.get(path, headers={**auth, **extra})
            assert a.status == b.status == 304
            assert _comparable(dict(a.headers)) == _comparable(dict(b.headers))


async def test_hot_and_chain_count_the_same_metrics(
    clients: tuple[TestClient, TestClient],
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    auth = {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}
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


# -- Front (HotRunner): the bytes on the wire, and what it hands to the application ---------------


async def test_the_reader_runner_puts_front_before_the_application(
    front: tuple[TestClient, TestClient],
) -> None:
    hot, _ = front
    assert hot.server.runner is not None and hot.server.runner.server is not None
    assert isinstance(hot.server.runner.server.request_handler, Front)


async def _exchange(client: TestClient, request: bytes) -> bytes:
    """One raw HTTP exchange: the response's bytes, Date's value blanked."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
        body = await reader.readexactly(int(length.group(1))) if length else b""
    finally:
        writer.close()
    return re.sub(rb"\r\nDate: [^\r]+\r\n", b"\r\nDate: -\r\n", head) + body


def _raw(path: str, version: str = "1.1", **headers: str) -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: persona.test", "X-Request-Id: same-1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_front_writes_the_bytes_the_chain_writes(
    front: tuple[TestClient, TestClient],
) -> None:
    hot, chain = front
    auth = "Bearer s3cret-kkkkkkkkkkkkkkkkk"
    path = "/v1/users/u1/blocks/recommendations"
    etag = (await hot.get(path, headers={"Authorization": auth})).headers["ETag"]
    requests = [
        _raw(path, Authorization=auth),
        _raw(path + "?format=json", Authorization=auth),
        _raw("/v1/users/nobody/blocks/winback", Authorization=auth),  # the fallback
        _raw("/v1/users/u1/blocks/cart_reminder", Authorization=auth),
        _raw(path, Authorization=auth, If_None_Match=etag),  # 304
        _raw(path, Authorization=auth, If_None_Match=f'"x", W/{etag}'),
        _raw(path),  # 401
        _raw(path, Authorization="Bearer other-kkkkkkkkkkkkkkkkkk"),  # 403
        _raw("/v1/users/u1/blocks/no_such_block", Authorization=auth),  # 404
        _raw(path + "?format=xml", Authorization=auth),  # 400
        _raw("/v1/users/" + "x" * 129 + "/blocks/recommendations", Authorization=auth),
        # not keep-alive HTTP/1.1: aiohttp's own response writes the connection headers
        _raw(path, "1.0", Authorization=auth),
        _raw(path, "1.0", Authorization=auth, Connection="keep-alive"),
        _raw(path, Authorization=auth, Connection="close"),
        _raw(path, "1.0", Authorization=auth, If_None_Match=etag),
    ]
    for request in requests:
        answer = await _exchange(hot, request)
        assert answer == await _exchange(chain, request), request
        assert answer.startswith(b"HTTP/1.") and b"\r\nX-Request-Id: same-1\r\n" in answer


async def test_front_answers_keep_alive_requests_in_a_row(
    front: tuple[TestClient, TestClient],
) -> None:
    hot, _ = front
    reader, writer = await asyncio.open_connection(hot.host, hot.port)
    try:
        request = _raw(
            "/v1/users/u1/blocks/recommendations", Authorization="Bearer s3cret-kkkkkkkkkkkkkkkkk"
        )
        writer.write(request * 3)  # pipelined
        await writer.drain()
        for _ in range(3):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection" not in head
            length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
            assert length is not None
            assert (await reader.readexactly(int(length.group(1)))).startswith(b"<")
    finally:
        writer.close()


# Targets the front must hand to the application (whose router decodes, normalizes or refuses
# them), and near misses of the block route.
HANDED_OVER = [
    ("GET", "/v1/users/u%31/blocks/recommendations"),  # percent-escapes: decoded by the router
    ("GET", "/v1/users/u1/blocks/recommend%61tions"),
    ("GET", "/v1/users/./blocks/recommendations"),
    ("GET", "/v1/users/../blocks/recommendations"),
    ("GET", "/v1/users/u1/blocks/.."),
    ("GET", "/v1/users//blocks/recommendations"),
    ("GET", "/v1/users/u{1}/blocks/recommendations"),
    ("GET", "/v1/users/u1/blocks/recommendations/"),
    ("GET", "/v1/users/u1/blocks/"),
    ("GET", "/v1/users/u1/profile"),
    ("GET", "/v1/users/u1/export"),
    ("HEAD", "/v1/users/u1/blocks/recommendations"),
    ("POST", "/v1/users/u1/blocks/recommendations"),
    ("DELETE", "/v1/users/u1"),
    ("GET", "/healthz"),
]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        *HANDED_OVER,
        ("GET", "/v1/users/u1/blocks/export"),  # answered by Front: 403, the privacy scope's suffix
        ("GET", "/v1/users/a:b@c/blocks/recommendations?format=json&x=1"),
        ("GET", "/v1/users/u1/blocks/recommendations?"),
        ("GET", "/v1/users/u1/blocks/recommendations?format="),
    ],
)
async def test_front_and_the_chain_answer_alike(
    front: tuple[TestClient, TestClient], method: str, path: str
) -> None:
    hot, chain = front
    headers = {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}
    a = await hot.request(method, path, headers=headers)
    b = await chain.request(method, path, headers=headers)
    assert (a.status, await a.read()) == (b.status, await b.read())
    assert _comparable(dict(a.headers)) == _comparable(dict(b.headers))


def _front(app: web.Application) -> Front:
    async def application(request: web.BaseRequest) -> web.StreamResponse:
        raise AssertionError("not called")

    return Front(app, application)


@pytest.mark.parametrize(("method", "path"), HANDED_OVER)
def test_front_does_not_answer_what_the_application_must(method: str, path: str) -> None:
    from aiohttp.test_utils import make_mocked_request

    front = _front(_app())
    request = make_mocked_request(
        method, path, headers={"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}
    )
    assert method != "GET" or front.answer(request) is None


@pytest.mark.parametrize(
    "user_id", ["u1", "a:b@c", "x-y_z.9~", "it's+(1)", "k=v;w,x*!$&", "u" * 128, "u" * 129]
)
async def test_the_router_agrees_with_the_fronts_reading_of_plain_targets(user_id: str) -> None:
    """Front reads user id and block straight from the target; the router must find the block
    route with the same values for every target Front answers."""
    from aiohttp.test_utils import make_mocked_request

    from api.app import get_block

    app = _app()
    path = f"/v1/users/{user_id}/blocks/recommendations"
    request = make_mocked_request(
        "GET", path, headers={"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}
    )
    assert _front(app).answer(request) is not None
    match = await app.router.resolve(request)
    assert match.handler is get_block
    assert (match["user_id"], match["block"]) == (user_id, "recommendations")


async def test_front_hands_over_routed_users_experiments_and_expectations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiohttp.test_utils import make_mocked_request

    from api.app import CONTENT
    from api.models_routes import ADMIN

    app = _app()
    front = _front(app)
    path = "/v1/users/u1/blocks/recommendations"
    auth = {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}
    assert front.answer(make_mocked_request("GET", path, headers=auth)) is not None
    expect = {**auth, "Expect": "100-continue"}
    assert front.answer(make_mocked_request("GET", path, headers=expect)) is None

    state = app[CONTENT].state
    monkeypatch.setattr(state, "owner_url", lambda user_id: "http://127.0.0.1:1")
    assert front.answer(make_mocked_request("GET", path, headers=auth)) is None  # forwarded
    routed = {**auth, "X-Persona-Routed": "1"}  # a caller's own mark is no hop: forwarded
    assert front.answer(make_mocked_request("GET", path, headers=routed)) is None
    monkeypatch.undo()

    content = app[CONTENT]
    recs = content.models.recs
    experiment = Experiment("t", "recs", recs.version, recs.version)
    monkeypatch.setattr(
        content, "models", replace(content.models, experiment=experiment, candidate=recs)
    )
    answer = front.answer(make_mocked_request("GET", path, headers=auth))
    assert answer is not None and answer.status == 200  # no model admin: no exposures logged
    app[ADMIN] = object()  # type: ignore[assignment]
    assert front.answer(make_mocked_request("GET", path, headers=auth)) is None  # exposures


def test_hot_response_headers_on_demand() -> None:
    from aiohttp.test_utils import make_mocked_request

    from api.hot import HotResponse

    app = _app()
    request = make_mocked_request(
        "GET",
        "/v1/users/u1/blocks/recommendations",
        headers={"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk", "X-Request-Id": "r-9"},
    )
    response = _front(app).answer(request)
    assert isinstance(response, HotResponse) and response.status == 200
    assert response.headers["X-Request-Id"] == "r-9"
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert response.content_type == "text/html"
    assert int(response.headers["Content-Length"]) > 0


def test_a_header_value_with_a_line_break_is_never_written_raw() -> None:
    from aiohttp.test_utils import make_mocked_request

    from api.app import CONTENT
    from api.block_headers import header_lines
    from api.block_routes import Decision
    from api.hot import HotResponse, _block_response

    app = _app()
    block = app[CONTENT].block("u1", "recommendations", "html")
    request = make_mocked_request("GET", "/v1/users/u1/blocks/recommendations")
    assert isinstance(_block_response(request, Decision(200, "k", block), "r-1"), HotResponse)
    broken = replace(block, variant="b\r\nX-Injected: 1")
    assert header_lines(broken, False) is None and header_lines(broken, True) is None
    response = _block_response(request, Decision(200, "k", broken), "r-1")
    assert not isinstance(response, HotResponse)  # aiohttp's own checks refuse to write it


def test_a_tentative_decision_counts_nothing_against_a_key_or_an_address() -> None:
    """`decide(..., tentative=True)` (Front.wire) hands on what it does not answer without taking
    a token or counting a failed authentication: aiohttp's path decides again and counts once."""
    from api.block_routes import HAND_ON, BlockGet, Gate, decide
    from engine.params import NO_PARAMS

    content = ContentService(_state(), ModelSet.default(), Renderer(), BlockPolicy())
    options = ServingOptions({"slow": 0.001})  # one token, the next in 1,000 s
    gate = Gate.of(create_app(content, KeyRing.from_settings(KEYS, None), options))

    def get(secret: str, block: str = "recommendations") -> BlockGet:
        path = f"/v1/users/u1/blocks/{block}"
        return BlockGet(path, "u1", block, "html", NO_PARAMS, f"Bearer {secret}", None, "10.1.2.3")

    for _ in range(100):  # far over the address's 30 failures a minute
        assert decide(gate, get("wrong-kkkkkkkkkkkkkkkkkkkk"), tentative=True) is HAND_ON
    assert decide(gate, get("wrong-kkkkkkkkkkkkkkkkkkkk")).status == 401  # not 429
    slow = "slowsecret-kkkkkkkkkkkkk"
    for _ in range(5):
        assert decide(gate, get(slow, "no-such-block"), tentative=True) is HAND_ON
    assert decide(gate, get(slow), tentative=True).status == 200  # takes the one token
    assert decide(gate, get(slow), tentative=True) is HAND_ON
    assert gate.limiter.limited == 0
    assert decide(gate, get(slow)).status == 429 and gate.limiter.limited == 1
