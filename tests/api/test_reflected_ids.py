"""A 404 naming a user or item id from the path quotes a real-length id whole and cuts a longer
one: a path may carry ~8 KB, and each such answer echoed all of it (found by the feeds/UI red
team, 2026-12-08)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from models.registry import ModelSet

SECRET = "reflected-ids-kkkkkkkkkkkkkkkk"
AUTH = {"Authorization": f"Bearer {SECRET}"}
LONG = "x" * 6000


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"all:{SECRET}:content:read,privacy:admin", None)
    async with TestClient(TestServer(create_app(content, keys))) as c:
        yield c


@pytest.mark.parametrize(
    "route",
    ["/v1/users/{id}/profile", "/v1/users/{id}/export", "/v1/items/{id}/similar"],
)
async def test_a_long_id_is_cut_in_the_404_and_a_real_one_quoted_whole(
    client: TestClient, route: str
) -> None:
    r = await client.get(route.format(id=LONG), headers=AUTH)
    assert r.status in (400, 404), await r.text()
    detail = (await r.json())["detail"]
    assert len(detail) < 400, len(detail)
    real = "u" * 128
    r = await client.get(route.format(id=real), headers=AUTH)
    assert r.status == 404
    assert f"'{real}'" in (await r.json())["detail"]
