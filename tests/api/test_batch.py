"""`POST /v1/blocks:batch` computed in slices (api/batch.py `sliced_blocks`): other requests are
answered while a batch is in progress, and the answer is byte for byte the one computed in one go
(JSON and msgpack, HTML and JSON blocks, duplicates, unknown users); bad ids are still a 400."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer

import api.batch
from api.app import CONTENT, create_app
from api.auth import KeyRing
from api.content import ContentService
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
