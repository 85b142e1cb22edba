"""`POST /v1/render` split by owner (api/fanout.py) stays within one request budget: each owner
was sent only its share of the time left (`deadline_ms`) and rendered under a whole
`REQUEST_LIMITS` of its own (4 s of CPU, 2,000,000 steps, ...), so one request split over N
workers could cost N budgets. An owner is now sent `render_budget`, its recipients' share of
what is left of the request's (this process keeps the rest, and takes back the share of an
owner it could not reach), and renders under it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.sandbox import REQUEST_LIMITS
from models.registry import ModelSet

SECRET = "render-budget-0123456789abcdef"
CLUSTER = "cluster-secret-for-the-budget-tests-kk"
AUTH = {"Authorization": f"Bearer {SECRET}"}
TEMPLATE = "<p>{{ user.user_id }}</p>"
IDS = ["a1", "b1", "a2", "b2", "b3", "a3", "b4", "a4"]  # b*: the other owner's


def _client(owner: str | None) -> TestClient:
    state = MemoryState()
    state.scaled_out = lambda: True  # type: ignore[method-assign]
    state.owner_url = lambda uid: owner if uid.startswith("b") else None  # type: ignore[method-assign]
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"sender:{SECRET}:content:read", None)
    return TestClient(
        TestServer(create_app(content, keys, ServingOptions({}, 10.0, cluster_secret=CLUSTER)))
    )


@pytest.fixture
async def owner() -> AsyncIterator[tuple[TestServer, list[dict[str, Any]]]]:
    """An "owner" that records each sub-request's body and answers it unusably (500): its
    recipients are then rendered by the sender."""
    bodies: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        bodies.append(msgpack.unpackb(await request.read(), raw=False))
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/v1/render", handler)
    async with TestServer(app) as server:
        yield server, bodies


async def test_an_owner_is_sent_its_share_of_the_request_budget(
    owner: tuple[TestServer, list[dict[str, Any]]],
) -> None:
    server, bodies = owner
    async with _client(str(server.make_url("")).rstrip("/")) as client:
        body = {"template": TEMPLATE, "user_ids": IDS}
        response = await client.post("/v1/render", json=body, headers=AUTH)
        assert response.status == 200
        results = (await response.json())["results"]
    (sub,) = bodies
    assert sub["user_ids"] == ["b1", "b2", "b3", "b4"]
    assert 0 < sub["deadline_ms"] <= 10_000  # as before
    # half the recipients: at most half of what was left (nothing had been spent yet)
    share = sub["render_budget"]
    assert share == {
        "cpu_ms": int(REQUEST_LIMITS.cpu_seconds * 1000) // 2,
        "steps": REQUEST_LIMITS.steps // 2,
        "output_bytes": REQUEST_LIMITS.output_bytes // 2,
        "built_chars": REQUEST_LIMITS.built_chars // 2,
    }
    # the owner failed: its recipients rendered here, within what this process kept
    assert [results[u]["content"] for u in IDS] == [f"<p>{u}</p>" for u in IDS]


async def test_an_owner_renders_under_the_budget_it_was_sent() -> None:
    """The owner's side: `render_budget` lowers the request's totals (never raises them): with
    no steps left every recipient is cut, saying why; a value out of range is a 400 naming it."""
    async with _client(None) as client:
        zero = {"cpu_ms": 4000, "steps": 0, "output_bytes": 1 << 20, "built_chars": 1 << 20}
        body = {"template": TEMPLATE, "user_ids": ["a1", "a2"], "render_budget": zero}
        response = await client.post("/v1/render", json=body, headers=AUTH)
        assert response.status == 200, await response.text()
        answer = await response.json()
        assert answer["errors"] == 2
        assert all(r["content"] is None for r in answer["results"].values())
        assert "budget is spent" in answer["results"]["a1"]["error"]
        enough = {**zero, "steps": 1000}
        response = await client.post(
            "/v1/render", json={**body, "render_budget": enough}, headers=AUTH
        )
        assert (await response.json())["errors"] == 0
        for bad in (
            {**zero, "cpu_ms": 4001},
            {**zero, "steps": -1},
            {**zero, "steps": "10"},
            {"cpu_ms": 10},
            {**zero, "extra": 1},
            [1, 2],
        ):
            response = await client.post(
                "/v1/render", json={**body, "render_budget": bad}, headers=AUTH
            )
            assert response.status == 400, bad
            assert "render_budget" in await response.text()


# ~101 steps a message (100 loop iterations and the rest): a request budget of STEPS renders all
# eight recipients in one process, and only four within half of it. Steps are counted, not timed.
LOOPING = "{% for i in range(100) %}{% endfor %}<p>{{ user.user_id }}</p>"
STEPS = 8 * 101 + 50
LIMITED = {"cpu_ms": 4000, "steps": STEPS, "output_bytes": 1 << 20, "built_chars": 1 << 20}


async def test_what_an_owner_was_given_is_not_spent_here_again(
    owner: tuple[TestServer, list[dict[str, Any]]],
) -> None:
    """The owner was reached (it may have spent its share) and failed: its recipients are
    rendered here only within what this process kept, so the request never spends more than
    its one budget; those past it are cut, saying why."""
    server, bodies = owner
    async with _client(str(server.make_url("")).rstrip("/")) as client:
        body = {"template": LOOPING, "user_ids": IDS, "render_budget": LIMITED}
        response = await client.post("/v1/render", json=body, headers=AUTH)
        answer = await response.json()
    (sub,) = bodies
    assert sub["render_budget"]["steps"] == STEPS // 2
    here = [u for u in IDS if u.startswith("a")]
    assert all(answer["results"][u]["error"] is None for u in here)
    assert answer["errors"] == 4  # the owner's four: no budget left here for them
    cut = [answer["results"][u]["error"] for u in IDS if u not in here]
    assert all("budget is spent" in e or "more than" in e for e in cut), cut


async def test_the_share_of_an_owner_never_reached_is_rendered_here_in_full() -> None:
    """An owner that cannot be reached spent nothing: its share comes back, and its recipients
    are rendered here within the whole budget, as before."""
    async with _client("http://127.0.0.1:9") as client:  # nothing listens on port 9
        body = {"template": LOOPING, "user_ids": IDS, "render_budget": LIMITED}
        response = await client.post("/v1/render", json=body, headers=AUTH)
        assert response.status == 200
        answer = await response.json()
    assert answer["errors"] == 0, answer
    assert [answer["results"][u]["content"] for u in IDS] == [f"<p>{u}</p>" for u in IDS]
