"""A new sender's typical mistakes in `POST /v1/blocks:batch` and `POST /v1/render` get a 400
naming what was meant (a walk through the docs as a new user, 2026-12-07): a misspelled field
of the route's own (`blocks`, `tempalte`, `user_id`) was answered as if the field were missing
("block is one of ...", "template must be a non-empty string"), and a misspelled block in a
sender's template (`{{ blocks.recomendations }}`) rendered nothing, with status 200 and no error,
so the e-mails went out without their recommendations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.render import template_names_checked
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from models.registry import ModelSet

SECRET = "sender-mistakes-kkkkkkkkkkkk"
AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"send:{SECRET}:content:read", None)
    async with TestClient(TestServer(create_app(content, keys))) as c:
        yield c


async def problem_of(client: TestClient, route: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(route, json=body, headers=AUTH)
    assert r.status == 400 and r.content_type == "application/problem+json"
    problem: dict[str, Any] = await r.json()
    return problem


@pytest.mark.parametrize(
    ("route", "body", "typo", "meant"),
    [
        ("/v1/blocks:batch", {"blocks": "recommendations", "user_ids": ["u1"]}, "blocks", "block"),
        ("/v1/blocks:batch", {"block": "winback", "user_id": ["u1"]}, "user_id", "user_ids"),
        (
            "/v1/blocks:batch",
            {"block": "winback", "fromat": "json", "user_ids": ["u1"]},
            "fromat",
            "format",
        ),
        ("/v1/render", {"tempalte": "hi", "user_ids": ["u1"]}, "tempalte", "template"),
        ("/v1/render", {"template": "hi", "user_id": ["u1"]}, "user_id", "user_ids"),
        ("/v1/render", {"template": "hi", "user_ids": ["u1"], "date": {}}, "date", "data"),
    ],
)
async def test_a_misspelled_field_is_named_with_the_one_meant(
    client: TestClient, route: str, body: dict[str, Any], typo: str, meant: str
) -> None:
    problem = await problem_of(client, route, body)
    assert problem["parameter"] == typo
    assert f"did you mean {meant!r}" in problem["detail"]


@pytest.mark.parametrize(
    ("template", "name", "meant"),
    [
        ("<p>{{ blocks.recomendations }}</p>", "recomendations", "recommendations"),
        ("{{ blocks['cart_remider'] }}", "cart_remider", "cart_reminder"),
        ("{% if user.known %}{{ blocks.win_back }}{% endif %}", "win_back", "winback"),
    ],
)
async def test_a_misspelled_block_in_a_template_is_a_400(
    client: TestClient, template: str, name: str, meant: str
) -> None:
    problem = await problem_of(client, "/v1/render", {"template": template, "user_ids": ["u1"]})
    assert f"blocks.{name}" in problem["detail"] and f"blocks.{meant}" in problem["detail"]


async def test_a_block_with_no_name_close_to_it_names_the_blocks(client: TestClient) -> None:
    problem = await problem_of(
        client, "/v1/render", {"template": "{{ blocks.hero_banner }}", "user_ids": ["u1"]}
    )
    assert "blocks.hero_banner" in problem["detail"]
    assert "blocks.recommendations" in problem["detail"]  # the list of the ones there are


@pytest.mark.parametrize(
    "template",
    [
        "{{ blocks.recommendations }}{{ blocks['winback'] }}{{ blocks.cart_reminder }}",
        "{% for name in blocks %}{{ blocks[name] }}{% endfor %}",  # a name not known until run
        "{{ blocks.get('winback') }}{{ blocks.items() | length }}",  # the mapping's methods
        "{% set blocks = {'hero': 'x'} %}{{ blocks.hero }}",  # the template's own `blocks`
        "{% for blocks in [{'a': 1}] %}{{ blocks.a }}{% endfor %}",
        "{{ user.first_name }}{{ user.recomendations }}",  # user.* is the sender's own data
    ],
)
async def test_what_a_template_may_use_still_renders(client: TestClient, template: str) -> None:
    r = await client.post(
        "/v1/render", json={"template": template, "user_ids": ["u1"]}, headers=AUTH
    )
    assert r.status == 200, await r.text()
    assert (await r.json())["errors"] == 0


def test_the_check_reads_the_template_not_its_text() -> None:
    """A block name in a string, a comment or raw text is not a use of it."""
    template_names_checked("{# blocks.nope #}{% raw %}{{ blocks.nope }}{% endraw %}")
    template_names_checked("{{ 'blocks.nope' }}")
