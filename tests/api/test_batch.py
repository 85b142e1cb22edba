"""`POST /v1/blocks:batch` computed in slices (api/batch.py `sliced_blocks`): other requests are
answered while a batch is in progress, and the answer is byte for byte the one computed in one go
(JSON and msgpack, HTML and JSON blocks, duplicates, unknown users); bad ids are still a 400."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import api.batch
from api.app import CONTENT, create_app
from api.auth import KeyRing
from api.content import ContentService
from api.hot import HotRunner
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import Block, BlockPolicy, Renderer
from engine.catalog import Product
from engine.events import validate
from engine.params import BlockParams
from models.registry import ModelSet

T0 = 1_300_000_000_000
SECRET = "batch-secret-kkkkkkkkkkkkkk"
AUTH = {"Authorization": f"Bearer {SECRET}"}
USERS = [f"u{n}" for n in range(12)]


def product(item_id: str) -> Product:
    url = f"https://shop.example.com/p/{item_id}"
    return Product(item_id, f"Product {item_id}", url, url + ".jpg", 2.5, "GBP")


@pytest.fixture
def state() -> MemoryState:
    s = MemoryState()
    for item in ModelSet.default().recs.popular[:50]:
        s.put_product(product(item))
    items = ModelSet.default().recs.popular[:50]
    for n, user in enumerate(USERS):
        for k, kind in enumerate(("product_view", "add_to_cart")):
            event = {"event_id": f"{user}-{k}", "type": kind, "user_id": user}
            item = items[(n * 3 + k) % len(items)]
            s.apply(validate({**event, "item_id": item, "ts": T0 + n * 1000 + k}))
    return s


def make_client(state: MemoryState) -> TestClient:
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"send:{SECRET}:content:read", None)
    return TestClient(TestServer(create_app(content, keys)))


@pytest.fixture
async def client(state: MemoryState) -> AsyncIterator[TestClient]:
    async with make_client(state) as c:
        yield c


def slice_every_chunk(monkeypatch: pytest.MonkeyPatch, users: int) -> None:
    """`users` users per chunk, a yield after every chunk."""
    monkeypatch.setattr(api.batch, "CHUNK_USERS", users, raising=False)
    monkeypatch.setattr(api.batch, "SLICE_SECONDS", 0.0, raising=False)


def record_slices(client: TestClient, order: list[str], on_slice: Callable[[], None]) -> None:
    """Every `ContentService.blocks` call appends "slice" to `order` (and calls `on_slice`)."""
    app = client.app
    assert app is not None
    content = app[CONTENT]
    blocks = content.blocks

    def recorded(ids: list[str], block: str, fmt: str, params: BlockParams) -> list[Block]:
        order.append("slice")
        on_slice()
        return blocks(ids, block, fmt, params)

    setattr(content, "blocks", recorded)  # noqa: B010  (an instance attribute over the method)


async def test_a_block_get_is_answered_while_a_batch_is_in_progress(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first slice starts a single GET; the batch waits for it between slices (the yield
    replaced by one that waits for the GET's answer): it is answered before the last slice. In
    one go (the old code), the GET could only be answered after the whole batch."""
    slice_every_chunk(monkeypatch, 2)
    order: list[str] = []
    single: list[asyncio.Task[Any]] = []

    async def get_single() -> int:
        r = await client.get("/v1/users/u0/blocks/recommendations", headers=AUTH)
        await r.read()
        order.append("single")
        return r.status

    def on_slice() -> None:
        if not single:
            single.append(asyncio.get_running_loop().create_task(get_single()))

    async def wait_for_the_single() -> None:
        await asyncio.wait_for(asyncio.shield(single[0]), 10)

    record_slices(client, order, on_slice)
    monkeypatch.setattr(api.batch, "between_slices", wait_for_the_single, raising=False)
    body = {"block": "recommendations", "user_ids": USERS[1:]}
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    assert r.status == 200 and len((await r.json())["results"]) == len(USERS) - 1
    assert await single[0] == 200
    assert order.index("single") < len(order) - 1  # slices ran after the GET was answered
    assert order[0] == "slice" and order.count("slice") == 6


async def test_a_batch_yields_to_the_event_loop_between_slices(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the real yield: a task ready to run runs between two slices of one batch."""
    slice_every_chunk(monkeypatch, 3)
    order: list[str] = []
    record_slices(client, order, lambda: None)
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            order.append("tick")
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    body = {"block": "recommendations", "format": "json", "user_ids": USERS}
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    done.set()
    await ticking
    assert r.status == 200
    slices = [n for n, what in enumerate(order) if what == "slice"]
    assert len(slices) == 4
    assert all("tick" in order[a:b] for a, b in itertools.pairwise(slices))


@pytest.mark.parametrize("accept", ["application/json", "application/msgpack"])
@pytest.mark.parametrize("fmt", ["html", "json"])
@pytest.mark.parametrize("block", ["recommendations", "cart_reminder"])
async def test_the_sliced_answer_is_the_answer_in_one_go(
    state: MemoryState, monkeypatch: pytest.MonkeyPatch, accept: str, fmt: str, block: str
) -> None:
    """Two services over the same state, one answering in chunks of 2 users with a yield after
    each, the other in one chunk: the same bytes (order, duplicates answered once, unknown
    users' fallbacks, ETags, the encoding)."""
    ids = ["u3", "stranger", "u1", "u3", *USERS, "another-stranger", "u0"]
    body = msgpack.packb({"block": block, "format": fmt, "user_ids": ids, "n": 3})
    headers = {**AUTH, "Content-Type": "application/msgpack", "Accept": accept}
    answers = []
    for chunk, pause in ((2, 0.0), (10_000, 3600.0)):
        monkeypatch.setattr(api.batch, "CHUNK_USERS", chunk, raising=False)
        monkeypatch.setattr(api.batch, "SLICE_SECONDS", pause, raising=False)
        async with make_client(state) as c:
            r = await c.post("/v1/blocks:batch", data=body, headers=headers)
            assert r.status == 200 and r.content_type == accept
            answers.append(await r.read())
    assert answers[0] == answers[1]
    if accept == "application/msgpack":
        results = msgpack.unpackb(answers[0])["results"]
    else:
        results = json.loads(answers[0])["results"]
    assert list(results) == list(dict.fromkeys(ids))
    assert results["stranger"]["fallback"] is True
    assert any(not entry["fallback"] for entry in results.values())


async def test_a_bad_id_is_still_a_400_naming_its_index(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slice_every_chunk(monkeypatch, 2)
    body = {"block": "recommendations", "user_ids": [*USERS, "bad\x00id"]}
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    assert r.status == 400 and r.content_type == "application/problem+json"
    assert f"user_ids[{len(USERS)}]" in (await r.json())["detail"]


@pytest.mark.parametrize("route", ["/v1/blocks:batch", "/v1/render"])
@pytest.mark.parametrize("bad", ["x" * 129, "", 7, None])
async def test_an_id_of_a_bad_length_or_type_is_a_400_naming_its_index(
    client: TestClient, route: str, bad: Any
) -> None:
    """A sender looking for the one bad id among 1000 is told where it is."""
    own = {"block": "recommendations"} if "batch" in route else {"template": "{{ user.user_id }}"}
    body = {**own, "user_ids": [*USERS, bad, "after"]}
    r = await client.post(route, json=body, headers=AUTH)
    assert r.status == 400 and r.content_type == "application/problem+json"
    assert f"user_ids[{len(USERS)}]" in (await r.json())["detail"]


class ServedTestServer(TestServer):
    """A test server run as `persona` serves (api/hot.py `HotRunner`): without aiohttp's
    `handler_cancellation`, which TestServer turns on, so a client going away does not cancel
    the handler."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        kwargs["handler_cancellation"] = False
        return HotRunner(self.app, **kwargs)


@pytest.mark.parametrize("route", ["/v1/blocks:batch", "/v1/render"])
async def test_a_client_gone_mid_batch_stops_the_work(
    state: MemoryState, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """An ESP client that times out and closes its connection: the batch stops at its next
    slice instead of computing (and logging exposures for) every user nobody will read; the old
    code computed all 12 users."""
    slice_every_chunk(monkeypatch, 1)
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"send:{SECRET}:content:read", None)
    async with TestClient(ServedTestServer(create_app(content, keys))) as client:
        computed: list[str] = []
        writers: list[asyncio.StreamWriter] = []

        def gone_after_the_first(user_id: str) -> None:
            computed.append(user_id)
            if len(computed) == 1:
                writers[0].transport.abort()  # the client goes away (a reset, as on a timeout)
                time.sleep(0.05)  # the server's socket has seen it by its next slice

        blocks, block = content.blocks, content.block

        def counted_blocks(ids: list[str], *args: Any, **kwargs: Any) -> list[Block]:
            for user_id in ids:
                gone_after_the_first(user_id)
            return blocks(ids, *args, **kwargs)

        def counted_block(user_id: str, *args: Any, **kwargs: Any) -> Block:
            gone_after_the_first(user_id)
            return block(user_id, *args, **kwargs)

        setattr(content, "blocks", counted_blocks)  # noqa: B010
        setattr(content, "block", counted_block)  # noqa: B010
        own = (
            {"block": "recommendations"}
            if "batch" in route
            else {"template": "{{ blocks.recommendations }}"}
        )
        body = json.dumps({**own, "user_ids": USERS}).encode()
        _, writer = await asyncio.open_connection(client.host, client.port)
        writers.append(writer)
        writer.write(
            f"POST {route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        for _ in range(100):  # the handler runs on (the old code to the last user) or stops
            await asyncio.sleep(0.02)
        assert 1 <= len(set(computed)) <= 3, computed  # users whose blocks were computed
        # the process goes on answering
        r = await client.post(route, json={**own, "user_ids": USERS[:2]}, headers=AUTH)
        assert r.status == 200


# -- deadline_ms ----------------------------------------------------------------------------------


class SlowClock:
    """`api.batch.clock` for a test: seconds that pass only when a chunk is computed (`step`
    per `ContentService.blocks` call), so where a deadline falls is certain."""

    def __init__(self, step: float) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        return self.now


def slow_chunks(client: TestClient, monkeypatch: pytest.MonkeyPatch, users: int, ms: int) -> None:
    """`users` users per chunk, each chunk taking `ms` milliseconds of the test's clock."""
    slice_every_chunk(monkeypatch, users)
    fake = SlowClock(ms / 1000)
    monkeypatch.setattr(api.batch, "clock", fake, raising=False)
    record_slices(client, [], lambda: setattr(fake, "now", fake.now + fake.step))


def results_of(raw: bytes, accept: str) -> dict[str, Any]:
    if accept == "application/msgpack":
        return dict(msgpack.unpackb(raw)["results"])
    return dict(json.loads(raw)["results"])


@pytest.mark.parametrize("accept", ["application/json", "application/msgpack"])
async def test_users_past_the_deadline_get_the_fallback(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, accept: str
) -> None:
    """Chunks of 2 users taking 10 ms each, a 35 ms deadline: the chunks started at 0, 10 and
    20 ms are computed (6 users, personalized as without a deadline); the one at 30 ms would end
    past it, so the 5 users left get the fallback an unknown user gets, counted in the header
    and the metric. The old route refused the field (400)."""
    headers = {**AUTH, "Accept": accept}
    body = {"block": "recommendations", "user_ids": USERS[1:]}
    r = await client.post("/v1/blocks:batch", json=body, headers=headers)
    full = results_of(await r.read(), accept)
    stranger = {"block": "recommendations", "user_ids": ["nobody-1"]}
    r = await client.post("/v1/blocks:batch", json=stranger, headers=headers)
    fallback = results_of(await r.read(), accept)["nobody-1"]
    assert fallback["fallback"] is True
    assert "X-Persona-Deadline-Fallbacks" not in r.headers  # no deadline_ms: no header

    slow_chunks(client, monkeypatch, 2, 10)
    r = await client.post("/v1/blocks:batch", json={**body, "deadline_ms": 35}, headers=headers)
    assert r.status == 200 and r.content_type == accept
    assert r.headers["X-Persona-Deadline-Fallbacks"] == "5"
    results = results_of(await r.read(), accept)
    assert list(results) == USERS[1:]
    computed, late = USERS[1:7], USERS[7:]
    assert {u: results[u] for u in computed} == {u: full[u] for u in computed}
    assert not all(results[u]["fallback"] for u in computed)  # personalized ones among them
    # the html fallback names no user; the reason says they were cut, not unknown
    assert fallback["fallback_reason"] == "unknown_user"
    assert all(results[u] == {**fallback, "fallback_reason": "deadline"} for u in late)
    assert all(not full[u]["fallback"] for u in late)  # they were personalized without one
    metrics = await (await client.get("/metrics")).text()
    assert "persona_http_batch_deadline_fallbacks_total 5.0" in metrics


async def test_the_deadline_fallback_of_an_ads_block_names_each_user(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """json blocks write the user id: each late user's fallback is an unknown user's with their
    own id (the shared one rendered once), exactly what the route answers a stranger."""
    r = await client.post(
        "/v1/blocks:batch",
        json={"block": "recommendations", "format": "json", "user_ids": ["nobody-1"]},
        headers=AUTH,
    )
    stranger = (await r.json())["results"]["nobody-1"]
    slow_chunks(client, monkeypatch, 2, 10)
    body = {"block": "recommendations", "format": "json", "user_ids": USERS, "deadline_ms": 5}
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    assert r.status == 200 and r.headers["X-Persona-Deadline-Fallbacks"] == "10"
    results = (await r.json())["results"]
    assert not results["u0"]["fallback"]  # the first chunk starts before the deadline
    for user in USERS[2:]:
        entry = results[user]
        assert entry["fallback"] is True and json.loads(entry["content"])["user_id"] == user
        mine = stranger["content"].replace('"nobody-1"', json.dumps(user))
        assert entry["content"] == mine


@pytest.mark.parametrize("accept", ["application/json", "application/msgpack"])
@pytest.mark.parametrize("fmt", ["html", "json"])
async def test_a_generous_deadline_answers_as_without_one(
    state: MemoryState, monkeypatch: pytest.MonkeyPatch, accept: str, fmt: str
) -> None:
    """Slow chunks (10 ms each) well within 10 s: the same bytes as without `deadline_ms`."""
    ids = ["u3", "stranger", "u1", "u3", *USERS, "u0"]
    headers = {**AUTH, "Content-Type": "application/msgpack", "Accept": accept}
    answers = []
    for extra in ({}, {"deadline_ms": 10_000}):
        body = msgpack.packb({"block": "cart_reminder", "format": fmt, "user_ids": ids, **extra})
        async with make_client(state) as c:
            slow_chunks(c, monkeypatch, 2, 10)
            r = await c.post("/v1/blocks:batch", data=body, headers=headers)
            assert r.status == 200 and r.content_type == accept
            assert r.headers.get("X-Persona-Deadline-Fallbacks") == ("0" if extra else None)
            answers.append(await r.read())
    assert answers[0] == answers[1]


@pytest.mark.parametrize("deadline", [None, 10_000])
async def test_a_batch_answers_within_the_request_timeout(
    state: MemoryState, monkeypatch: pytest.MonkeyPatch, deadline: int | None
) -> None:
    """Chunks slower than the request timeout allows (here 6 chunks of 200 ms, a 1 s timeout):
    the users left when `TIMEOUT_SHARE` of it has passed get the fallback, with or without
    `deadline_ms` (10 s is no later than the timeout), and the answer is a 200 saying how many.
    The old code computed on until the timeout answered 503 and threw every block away (as
    under an ESP's 4 concurrent 1000-user batches on a loaded machine)."""
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"send:{SECRET}:content:read", None)
    options = ServingOptions(request_timeout=1.0)
    async with TestClient(TestServer(create_app(content, keys, options))) as c:
        slow_chunks(c, monkeypatch, 2, 200)
        extra = {} if deadline is None else {"deadline_ms": deadline}
        body = {"block": "recommendations", "user_ids": USERS, **extra}
        r = await c.post("/v1/blocks:batch", json=body, headers=AUTH)
        assert r.status == 200
        late = int(r.headers["X-Persona-Deadline-Fallbacks"])
        assert 0 < late < len(USERS) - 2
        results = (await r.json())["results"]
        assert list(results) == USERS
        assert all(results[u]["fallback"] for u in USERS[-late:])
        assert not all(results[u]["fallback"] for u in USERS[:-late])


@pytest.mark.parametrize("value", [0, -1, 10_001, "50", 1.5, 50.0, True, None, [50], {}])
@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_bad_deadline_is_a_400_naming_it(
    client: TestClient, value: Any, encoding: str
) -> None:
    body = {"block": "recommendations", "user_ids": USERS, "deadline_ms": value}
    if encoding == "json":
        r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    else:
        headers = {**AUTH, "Content-Type": "application/msgpack"}
        r = await client.post("/v1/blocks:batch", data=msgpack.packb(body), headers=headers)
    assert r.status == 400 and r.content_type == "application/problem+json"
    problem = await r.json()
    assert problem["parameter"] == "deadline_ms" and "deadline_ms" in problem["detail"]


@pytest.mark.parametrize("value", [1, 10_000])
async def test_the_deadline_bounds_are_accepted(client: TestClient, value: int) -> None:
    body = {"block": "recommendations", "user_ids": USERS, "deadline_ms": value}
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    assert r.status == 200 and len((await r.json())["results"]) == len(USERS)


@pytest.mark.parametrize("route", ["/v1/blocks:batch", "/v1/render"])
async def test_a_body_in_the_other_encoding_than_its_content_type_says_so(
    client: TestClient, route: str
) -> None:
    """JSON sent as `Content-Type: application/msgpack` was answered 'not valid JSON or msgpack:
    unpack(b) received extra data.', msgpack sent without the header '... 'utf-8' codec can't
    decode byte 0x83': the sender was not told which header to send."""
    fields = {"block": "recommendations", "template": "x", "user_ids": USERS[:2]}
    as_msgpack = {**AUTH, "Content-Type": "application/msgpack"}
    r = await client.post(route, data=json.dumps(fields).encode(), headers=as_msgpack)
    detail = (await r.json())["detail"]
    assert r.status == 400 and "Content-Type: application/msgpack" in detail
    assert "looks like JSON: send Content-Type: application/json" in detail
    r = await client.post(route, data=msgpack.packb(fields), headers=AUTH)
    detail = (await r.json())["detail"]
    assert (
        r.status == 400 and "looks like msgpack: send Content-Type: application/msgpack" in detail
    )
    r = await client.post(route, data=b"<xml/>", headers={**AUTH, "Content-Type": "text/xml"})
    detail = (await r.json())["detail"]
    assert r.status == 400 and "not JSON" in detail and "looks like" not in detail


@pytest.mark.parametrize("route", ["/v1/blocks:batch", "/v1/render"])
async def test_every_bad_id_is_named_not_only_the_first(client: TestClient, route: str) -> None:
    """A list of 1000 with three bad ids was refused naming the first only: the sender fixed it,
    sent again, was refused for the second, and so on. Every one is named (at most
    `MAX_NAMED`, then how many more), in order, with `parameter` user_ids."""
    from api.bodies import MAX_NAMED

    own = {"block": "recommendations"} if "batch" in route else {"template": "{{ user.user_id }}"}
    ids: list[Any] = [*USERS, "", "ok-1", 7, "ok-2", "bad\x00id"]
    r = await client.post(route, json={**own, "user_ids": ids}, headers=AUTH)
    assert r.status == 400 and r.content_type == "application/problem+json"
    problem = await r.json()
    assert problem["parameter"] == "user_ids"
    n = len(USERS)
    named = [f"user_ids[{i}]" for i in (n, n + 2, n + 4)]
    assert all(name in problem["detail"] for name in named), problem["detail"]
    assert [problem["detail"].index(name) for name in named] == sorted(
        problem["detail"].index(name) for name in named
    )
    assert "ok-1" not in problem["detail"] and f"user_ids[{n + 1}]" not in problem["detail"]
    many = [*USERS, *([None] * (MAX_NAMED + 5))]
    r = await client.post(route, json={**own, "user_ids": many}, headers=AUTH)
    detail = (await r.json())["detail"]
    assert r.status == 400 and detail.count("user_ids[") == MAX_NAMED
    assert detail.endswith("and 5 more")


@pytest.mark.parametrize(
    ("accept", "packed"),
    [
        ("application/msgpack", True),
        ("application/x-msgpack", True),
        ("application/msgpack, application/json", True),  # equally preferred: msgpack, as ever
        ("APPLICATION/MSGPACK", True),  # media types are case-insensitive
        ("application/json;q=0.5, application/msgpack", True),
        ("application/json, application/msgpack;q=0", False),  # q=0: "not acceptable"
        ("application/msgpack;q=0", False),
        ("application/msgpack; q=0.0", False),
        ("application/msgpack;q=0.4, application/json", False),  # JSON preferred
        ("application/msgpack;q=0.4, application/*", False),
        ("application/msgpack;q=zz, application/json", False),  # a q that is no number: 0
        ("application/msgpackx", False),  # not msgpack: another type whose name starts so
        ("text/html, */*", False),
        ("", False),
    ],
)
async def test_accept_negotiates_msgpack_by_its_q_values(
    client: TestClient, accept: str, packed: bool
) -> None:
    """msgpack was chosen whenever `Accept` held the text `application/msgpack` anywhere, even
    refused (`;q=0`) or less preferred than JSON: a sender saying it cannot read msgpack got it."""
    body = {"block": "recommendations", "format": "json", "user_ids": USERS[:2]}
    r = await client.post("/v1/blocks:batch", json=body, headers={**AUTH, "Accept": accept})
    assert r.status == 200
    raw = await r.read()
    if packed:
        assert r.content_type == "application/msgpack"
        assert set(msgpack.unpackb(raw)["results"]) == set(USERS[:2])
    else:
        assert r.content_type == "application/json"
        assert set(json.loads(raw)["results"]) == set(USERS[:2])
