"""`POST /v1/render` with `deadline_ms`: a sender with a client timeout of its own says how long
the render may take, as it can for `POST /v1/blocks:batch`; the recipients not rendered by then
are answered without a message and say why, in their order, and the answer comes in time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer

import api.render
from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from models.registry import ModelSet

SECRET = "render-deadline-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SECRET}"}
TEMPLATE = "<p>{{ user.user_id }}</p>{{ blocks.recommendations }}"
IDS = [f"r{i}" for i in range(10)]


class TickingClock:
    """`api.render.clock` for a test: each reading is a millisecond after the one before, so how
    far a render gets before a deadline does not depend on the machine's speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    state = MemoryState()
    for item in ModelSet.default().recs.popular[:20]:
        state.put_product(
            Product(item, f"P {item}", f"https://x/p/{item}", f"https://x/i/{item}.jpg", 1.0, "GBP")
        )
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"sender:{SECRET}:content:read", None)
    app = create_app(content, keys, ServingOptions({}, 3.0))
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_recipients_past_the_deadline_get_no_message_and_say_why(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old route refused the field (400 `unknown`): a sender whose own timeout was shorter
    than 60 % of the request timeout could only wait, or give up on every message."""
    monkeypatch.setattr(api.render, "clock", TickingClock())
    body = {"template": TEMPLATE, "user_ids": IDS, "deadline_ms": 4}
    r = await client.post("/v1/render", json=body, headers=AUTH)
    assert r.status == 200, await r.text()
    payload = await r.json()
    results = payload["results"]
    assert list(results) == IDS
    rendered = [u for u in IDS if results[u]["content"] is not None]
    late = [u for u in IDS if results[u]["content"] is None]
    assert rendered and late, results
    assert rendered == IDS[: len(rendered)]  # the first ones, in order
    for user in rendered:
        assert f"<p>{user}</p>" in results[user]["content"] and results[user]["error"] is None
    for user in late:
        entry = results[user]
        assert entry["fallback"] is True and "deadline_ms" in entry["error"]
    assert payload["errors"] == len(late)


def _metric(text: str, name: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    assert len(lines) == 1, (name, lines)
    return float(lines[0].split()[1])


async def test_recipients_cut_by_the_deadline_are_not_counted_as_template_failures(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """persona_render_errors_total ("template failed") counted the recipients a deadline cut,
    so an operator could not tell a slow render from a broken template: they are counted in
    persona_render_cut_total, and a failing template still in the errors."""
    monkeypatch.setattr(api.render, "clock", TickingClock())
    body = {"template": TEMPLATE, "user_ids": IDS, "deadline_ms": 4}
    payload = await (await client.post("/v1/render", json=body, headers=AUTH)).json()
    late = [u for u, entry in payload["results"].items() if entry["content"] is None]
    assert late and payload["errors"] == len(late)  # the answer still counts them all
    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, "persona_render_errors_total") == 0
    assert _metric(metrics, "persona_render_cut_total") == len(late)
    broken = {"template": "{{ blocks.recommendations }}{{ 1 // 0 }}", "user_ids": ["b1"]}
    answer = await (await client.post("/v1/render", json=broken, headers=AUTH)).json()
    assert answer["errors"] == 1
    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, "persona_render_errors_total") == 1
    assert _metric(metrics, "persona_render_cut_total") == len(late)


async def test_without_a_deadline_every_recipient_is_rendered(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same clock, no `deadline_ms`: the request timeout's share (1.8 s of 3 s) is far off."""
    monkeypatch.setattr(api.render, "clock", TickingClock())
    for extra in ({}, {"deadline_ms": 10_000}):
        body = {"template": TEMPLATE, "user_ids": IDS, **extra}
        r = await client.post("/v1/render", json=body, headers=AUTH)
        payload = await r.json()
        assert r.status == 200 and payload["errors"] == 0, extra
        assert all(res["content"] is not None for res in payload["results"].values())


@pytest.mark.parametrize("value", [0, -1, 10_001, "50", 1.5, True, None, [50]])
@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_bad_deadline_is_a_400_naming_it(
    client: TestClient, value: Any, encoding: str
) -> None:
    body = {"template": TEMPLATE, "user_ids": IDS, "deadline_ms": value}
    if encoding == "json":
        r = await client.post("/v1/render", json=body, headers=AUTH)
    else:
        headers = {**AUTH, "Content-Type": "application/msgpack"}
        r = await client.post("/v1/render", data=msgpack.packb(body), headers=headers)
    assert r.status == 400 and r.content_type == "application/problem+json"
    problem = await r.json()
    assert problem["parameter"] == "deadline_ms" and "1..10000" in problem["detail"]
