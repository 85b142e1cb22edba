"""GET/PUT /v1/rules (api/rules.py): the rules:admin scope, versions numbered by the server, a
stale edit refused, hostile documents refused with the place of the problem, every change
audited, and the rules served with the models (the in-memory registry folds the same record a
worker folds from the `models` topic)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.models_routes import ADMIN
from api.testing import MemoryRegistry, MemoryState
from engine.blocks import BlockPolicy, Renderer
from models.registry import ModelSet

RULES_KEY = "rules-admin-kkkkkkkkkkkkkkk"
MODELS_KEY = "models-admin-kkkkkkkkkkkkkk"
KEYS = f"merch:{RULES_KEY}:rules:admin;ds:{MODELS_KEY}:models:admin,content:read"
RULE = {"id": "no-candles", "action": "exclude", "match": {"category": "Candles"}}


def bearer(secret: str = RULES_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def setup() -> AsyncIterator[tuple[TestClient, ContentService]]:
    state = MemoryState()
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None))
    app[ADMIN] = MemoryRegistry(content, state)
    async with TestClient(TestServer(app)) as client:
        yield client, content


async def test_put_numbers_versions_and_serves_the_rules(
    setup: tuple[TestClient, ContentService],
) -> None:
    client, content = setup
    r = await client.get("/v1/rules", headers=bearer())
    assert r.status == 200 and await r.json() == {"version": "0", "rules": []}
    assert r.headers["ETag"] == '"0"'
    stamp = content.models.stamp()
    r = await client.put("/v1/rules", json={"version": "99", "rules": [RULE]}, headers=bearer())
    body = await r.json()
    assert r.status == 200 and body["version"] == "1" and r.headers["ETag"] == '"1"'
    assert body["rules"] == [{**RULE, "match": {"category": "candles"}}]
    assert content.models.rules.version == "1" and len(content.models.rules.rules) == 1
    assert content.models.stamp() != stamp  # cached blocks are made again
    r = await client.put("/v1/rules", json={"rules": []}, headers=bearer())
    assert (await r.json()) == {"version": "2", "rules": []}
    assert (await (await client.get("/v1/rules", headers=bearer())).json())["version"] == "2"


async def test_a_stale_edit_is_refused(setup: tuple[TestClient, ContentService]) -> None:
    client, _ = setup
    first = await client.put("/v1/rules", json={"rules": [RULE]}, headers=bearer())
    etag = first.headers["ETag"]
    r = await client.put("/v1/rules", json={"rules": []}, headers={**bearer(), "If-Match": etag})
    assert r.status == 200
    stale = await client.put(
        "/v1/rules", json={"rules": [RULE]}, headers={**bearer(), "If-Match": etag}
    )
    assert stale.status == 412 and "version '2'" in (await stale.json())["detail"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[", "expected a JSON object"),
        (b"[]", "must be an object"),
        (json.dumps({"rules": [{**RULE, "action": "nuke"}]}).encode(), "rules[0].action"),
        (json.dumps({"rules": [RULE, RULE]}).encode(), "used twice"),
        (b"\xff\xfe", "expected a JSON object"),
    ],
)
async def test_bad_documents_are_400_problems_and_change_nothing(
    setup: tuple[TestClient, ContentService], body: bytes, says: str
) -> None:
    client, content = setup
    r = await client.put("/v1/rules", data=body, headers=bearer())
    problem: dict[str, Any] = await r.json(content_type=None)
    assert r.status == 400 and says in problem["detail"]
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert content.models.rules.version == "0"


async def test_a_huge_body_is_413(setup: tuple[TestClient, ContentService]) -> None:
    client, _ = setup
    huge = b'{"rules": [' + b" " * (600 * 1024) + b"]}"
    r = await client.put("/v1/rules", data=huge, headers=bearer())
    assert r.status == 413


async def test_only_the_rules_scope_reads_or_changes_rules(
    setup: tuple[TestClient, ContentService],
) -> None:
    client, _ = setup
    for method in ("GET", "PUT"):
        r = await client.request(
            method, "/v1/rules", json={"rules": []}, headers=bearer(MODELS_KEY)
        )
        assert r.status == 403 and "rules:admin" in (await r.json(content_type=None))["detail"]
        assert (await client.request(method, "/v1/rules")).status == 401


async def test_every_change_is_audited(
    setup: tuple[TestClient, ContentService], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = setup
    with caplog.at_level(logging.INFO, "persona.audit"):
        await client.put("/v1/rules", json={"rules": [RULE]}, headers=bearer())
        await client.put("/v1/rules", data=b"[", headers=bearer())
        await client.get("/v1/rules", headers=bearer())  # a read: not audited
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "persona.audit"]
    changes = [(r["action"], r["outcome"], r["status"], r.get("version")) for r in records]
    assert changes == [("rules_change", "ok", 200, "1"), ("rules_change", "failed", 400, None)]
    assert records[0]["key"] == "merch" and records[0]["rules"] == 1
