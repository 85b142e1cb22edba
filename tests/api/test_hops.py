"""Forwarding in one process (api/routing.py, api/hops.py): what a hop carries, which targets get
one, and a process without a cluster secret (the two-worker proofs: tests/streams/test_hops.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.hops import target_problem
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.signing import HOP_HEADER, ClusterKey, Hop
from models.registry import ModelSet

SECRET = "s3cret-kkkkkkkkkkkkkkkkk"
CLUSTER = "cluster-secret-for-the-api-tests-kkkk"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def _client(owner: str | None, cluster: str | None = CLUSTER) -> TestClient:
    state = MemoryState()
    state.owner_url = lambda user_id: owner  # type: ignore[method-assign]
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"sender:{SECRET}:content:read,privacy:admin", None)
    return TestClient(TestServer(create_app(content, keys, ServingOptions(cluster_secret=cluster))))


@pytest.fixture
async def echo() -> AsyncIterator[TestServer]:
    """An "owner" that answers with the headers and body it received."""

    async def handler(request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        return web.json_response({"headers": dict(request.headers), "body": body})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app) as server:
        yield server


async def test_a_hop_carries_a_signature_and_never_the_bearer(echo: TestServer) -> None:
    owner = str(echo.make_url("")).rstrip("/")
    async with _client(owner) as client:
        response = await client.get("/v1/users/u1/profile?x=1", headers=AUTH)
        assert response.status == 200 and response.headers["X-Persona-Routed"] == owner
        seen = (await response.json())["headers"]
        assert "Authorization" not in seen and SECRET not in json.dumps(seen)
        signed_at = int(seen[HOP_HEADER].split(";")[1].removeprefix("t="))
        hop = ClusterKey(CLUSTER).verify_hop(
            seen[HOP_HEADER], "GET", "/v1/users/u1/profile?x=1", b"", signed_at
        )
        assert isinstance(hop, Hop) and hop.name == "sender"
        assert hop.scopes == frozenset({"content:read", "privacy:admin"})
        refused = await client.get("/v1/users/u1/profile")  # no key: never forwarded
        assert refused.status == 401 and "X-Persona-Routed" not in refused.headers


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.5:8080", None),
        ("https://persona-2.internal", None),
        ("http://user:pw@10.0.0.5:8080", "the URL carries credentials"),
        ("http://@10.0.0.5", "the URL carries credentials"),
        ("ftp://10.0.0.5", "scheme 'ftp' is not http(s)"),
        ("file:///etc/passwd", "scheme 'file' is not http(s)"),
        ("http://10.0.0.5:8080/steal?x=1", "the URL has a path, query or fragment"),
        ("http://", "no host"),
        ("http://10.0.0.5:99999", "not a URL"),
    ],
)
def test_hop_targets(url: str, why: str | None) -> None:
    assert target_problem(url) == why


@pytest.mark.parametrize("cluster", [CLUSTER, None])
async def test_no_hop_to_a_bad_target_or_without_a_secret(
    echo: TestServer, cluster: str | None
) -> None:
    good = str(echo.make_url("")).rstrip("/")
    bad = good.replace("http://", "http://user:pw@")
    owner = bad if cluster else good  # without a secret even a good target gets no hop
    async with _client(owner, cluster) as client:
        response = await client.get("/v1/users/u1/profile", headers=AUTH)
        assert response.status == 404 and "X-Persona-Routed" not in response.headers  # local
        metrics = await (await client.get("/metrics")).text()
        assert "persona_hop_targets_refused_total 1" in metrics
        assert "persona_hops_forwarded_total 0" in metrics


async def test_a_process_without_a_secret_refuses_every_hop() -> None:
    scopes = frozenset({"content:read"})
    hop = ClusterKey(CLUSTER).hop("GET", "/v1/users/u1/profile", "sender", scopes, b"", 0)
    async with _client(None, None) as client:
        response = await client.get("/v1/users/u1/profile", headers={HOP_HEADER: hop})
        assert response.status == 401
        assert "persona_hops_refused_total 1" in await (await client.get("/metrics")).text()
