"""Forwarding in one process (api/routing.py, api/hops.py): what a hop carries, which targets get
one, and a process without a cluster secret (the two-worker proofs: tests/streams/test_hops.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.hops import now_ms, target_problem
from api.limits import ServingOptions
from api.shared import MAX_BODY
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.signing import HOP_HEADER, ClusterKey, Hop
from models.registry import ModelSet

SECRET = "s3cret-kkkkkkkkkkkkkkkkk"
CLUSTER = "cluster-secret-for-the-api-tests-kkkk"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def _client(
    owner: str | None, cluster: str | None = CLUSTER, request_timeout: float = 10.0
) -> TestClient:
    state = MemoryState()
    state.owner_url = lambda user_id: owner  # type: ignore[method-assign]
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"sender:{SECRET}:content:read,privacy:admin", None)
    options = ServingOptions(request_timeout=request_timeout, cluster_secret=cluster)
    return TestClient(TestServer(create_app(content, keys, options)))


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


def _forged(kind: str) -> str:
    """A hop header no cluster member signed: a fresh one under another secret, or malformed."""
    if kind == "malformed":
        return "v1;t=1;nonsense"
    other = ClusterKey("not-the-cluster-secret-kkkkkkkkkkkkkkk")
    return other.hop("POST", "/v1/events", "sender", frozenset({"events:write"}), b"", now_ms())


OVER = MAX_BODY + 1  # bytes: one past the bound of every body


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize(("kind", "cluster"), [("forged", CLUSTER), ("malformed", CLUSTER),
                                               ("forged", None)])  # fmt: skip
async def test_a_forged_hop_over_the_body_bound_is_401_not_413(
    kind: str, cluster: str | None, framing: str
) -> None:
    """A forged hop learns only that it is refused (401), whatever its body's size: it got the
    413 of the body bound, which the signature check reached first by reading the body."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(OVER // (1 << 20)):
            yield b"x" * (1 << 20)
        yield b"x" * (OVER % (1 << 20))

    body = b"x" * OVER if framing == "length" else chunks()
    async with _client(None, cluster) as client:
        response = await client.post("/v1/events", data=body, headers={HOP_HEADER: _forged(kind)})
        assert response.status == 401, await response.text()
        assert "forwarded requests are signed" in (await response.json())["detail"]
        assert "persona_hops_refused_total 1" in await (await client.get("/metrics")).text()


@pytest.mark.parametrize("cluster", [CLUSTER, None])
async def test_a_forged_hop_is_refused_before_its_body_is_read(cluster: str | None) -> None:
    """A hop announcing a body past the bound is answered 401 from its head: the server does not
    wait for (or read) the body, of which only a few bytes are ever sent here."""
    async with _client(None, cluster) as client:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        try:
            head = (
                f"POST /v1/events HTTP/1.1\r\nHost: t\r\n{HOP_HEADER}: {_forged('forged')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {64 * MAX_BODY}\r\n\r\n"
            )
            writer.write(head.encode() + b"[" * 1024)
            status_line = await asyncio.wait_for(reader.readline(), 60)
        finally:
            writer.close()
        assert status_line.split(b" ", 2)[1] == b"401"


async def test_a_hop_is_not_charged_to_the_keys_rate_limit_again() -> None:
    """The process a sender called charged the key's rate limit (a batch one token per
    recipient); the owner it forwards to must not charge the same request again, or a batch split
    over two workers (api/fanout.py) costs a limited key up to twice its recipients. A request
    with the bearer itself is still limited."""
    state = MemoryState()
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"sender:{SECRET}:content:read", None)
    options = ServingOptions(cluster_secret=CLUSTER, rate_limits={"sender": 1.0})
    cluster = ClusterKey(CLUSTER)
    async with TestClient(TestServer(create_app(content, keys, options))) as client:
        for _ in range(3):  # one token a second: a hop never takes one
            target = "/v1/users/u1/profile"
            header = cluster.hop(
                "GET", target, "sender", frozenset({"content:read"}), b"", now_ms()
            )
            response = await client.get(target, headers={HOP_HEADER: header})
            assert response.status in (200, 404), await response.text()
        first = await client.get("/v1/users/u1/profile", headers=AUTH)
        second = await client.get("/v1/users/u1/profile", headers=AUTH)
        assert first.status != 429 and second.status == 429  # the bearer is limited


@pytest.mark.parametrize("runner", ["plain", "hot"])
async def test_a_callers_own_routed_header_does_not_stop_forwarding(
    echo: TestServer, runner: str
) -> None:
    """`X-Persona-Routed` marks a request another Persona process forwarded, and the process that
    got it answers it locally. Any caller could send it: a content:read key then got this
    process's local answer (a standby copy, stale) for a user another worker owns, on every
    `/v1/users/...` route, the block GET fast paths (api/hot.py: the aiohttp front, the
    connection's bytes, the middleware) and a batch's split. Only a verified hop is routed now;
    a caller's own header is ignored and the request forwarded to the owner as any other."""
    from tests.api.test_hot import HotTestServer

    owner = str(echo.make_url("")).rstrip("/")
    state = MemoryState()
    state.owner_url = lambda user_id: owner  # type: ignore[method-assign]
    state.scaled_out = lambda: True  # type: ignore[method-assign]
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(f"sender:{SECRET}:content:read", None)
    app = create_app(content, keys, ServingOptions(cluster_secret=CLUSTER))
    server = HotTestServer(app) if runner == "hot" else TestServer(app)
    routed = {**AUTH, "X-Persona-Routed": "1"}
    async with TestClient(server) as client:
        for path in ("/v1/users/u1/profile", "/v1/users/u1/blocks/recommendations"):
            for _ in range(2):  # a fresh connection, then a kept-alive one (api/wire.py)
                response = await client.get(path, headers=routed)
                assert response.headers.get("X-Persona-Routed") == owner, path
                seen = (await response.json())["headers"]
                assert HOP_HEADER in seen and "Authorization" not in seen
        metrics = await (await client.get("/metrics")).text()
        assert "persona_hops_forwarded_total 4" in metrics
        body = {"user_ids": ["u1", "u2"], "block": "recommendations"}
        response = await client.post("/v1/blocks:batch", json=body, headers=routed)
        assert response.status == 200
        metrics = await (await client.get("/metrics")).text()
        assert "persona_hops_forwarded_total 5" in metrics  # the batch asked the owner


async def test_a_forwarded_erasure_waits_for_an_owner_applying_it() -> None:
    """The owner of a user's partition waits up to 60 % of the request timeout for an erasure to
    be applied before it answers (api/privacy.py); the forwarding process gave every hop 2 s.
    An owner that took 3 s was taken for unreachable: the DELETE answered 202 `owner_unreachable`
    from a process holding nothing (and queued the erase twice) while the owner had erased the
    user. A DELETE's hop waits as long as the owner may; a profile read still gives up at 2 s."""

    async def slow_owner(request: web.Request) -> web.Response:
        await asyncio.sleep(3.0)
        user = request.match_info["user_id"]
        return web.json_response(
            {"user_id": user, "erased": True, "existed": True, "request_id": "r"}
        )

    app = web.Application()
    app.router.add_route("*", "/v1/users/{user_id}", slow_owner)
    app.router.add_route("*", "/v1/users/{user_id}/profile", slow_owner)
    async with TestServer(app) as owner_server:
        owner = str(owner_server.make_url("")).rstrip("/")
        async with _client(owner) as client:
            erased = await client.delete("/v1/users/u1", headers=AUTH)
            assert erased.status == 200, await erased.text()
            assert erased.headers["X-Persona-Routed"] == owner
            assert (await erased.json())["erased"] is True
            read = await client.get("/v1/users/u1/profile", headers=AUTH)
            assert "X-Persona-Routed" not in read.headers  # answered here after 2 s


@pytest.mark.parametrize("request_timeout", [1.0, 0.3])
async def test_a_hop_ends_in_time_for_a_local_answer_under_a_short_request_timeout(
    request_timeout: float, caplog: pytest.LogCaptureFixture
) -> None:
    """A hop's timeout (2 s; a DELETE's 60 % of the request timeout + 1 s) ignored the request's
    own timeout: with PERSONA_REQUEST_TIMEOUT under 2.5 s an owner that did not answer held the
    request until the timeout middleware answered 503, so the sender never answered locally: a
    DELETE neither queued the erasure here nor audited it, a read got no standby answer. A hop
    now ends by 80 % of the request's time, leaving the rest for the local answer."""
    release = asyncio.Event()

    async def stuck_owner(request: web.Request) -> web.Response:
        await release.wait()  # never answers in time
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stuck_owner)
    async with TestServer(app) as owner_server:
        owner = str(owner_server.make_url("")).rstrip("/")
        async with _client(owner, request_timeout=request_timeout) as client:
            with caplog.at_level(logging.INFO, "persona.audit"):
                erased = await client.delete("/v1/users/u1", headers=AUTH)
                body = await erased.json()
            assert erased.status == 202, body
            assert "X-Persona-Routed" not in erased.headers  # answered here
            assert body["erased"] is False and body["reason"] == "owner_unreachable"
            lines = [r.getMessage() for r in caplog.records if r.name == "persona.audit"]
            (record,) = [r for r in map(json.loads, lines) if r["action"] == "erase"]
            assert record["request_id"] == body["request_id"]
            read = await client.get("/v1/users/u1/profile", headers=AUTH)
            assert read.status != 503, await read.text()
            assert "X-Persona-Routed" not in read.headers
        release.set()
