"""Hostile bodies for the browser collector (`POST /v1/collect`, a publishable key anybody can
copy) and for `POST /v1/events`, which reads its bodies the same way (api/event_routes.py):
a Content-Type naming a charset Python cannot decode with, a body past the collector's bound sent
without a Content-Length, and NDJSON or a JSON array with far more events than a request may
hold."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from api.collect import MAX_BODY, MAX_EVENTS
from api.event_routes import MAX_EVENTS as MAX_POSTED
from api.testing import MemoryState
from engine.collect import COLLECTED_PREFIX
from engine.params import MAX_ID
from tests.api.test_broker_unavailable import BrokerAway
from tests.api.test_collect import OTHER, PK, READ, SHOP, WRITE, _client, bearer, ev


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


@pytest.fixture
async def client(state: MemoryState) -> AsyncIterator[TestClient]:
    async with await _client(state) as c:
        yield c


ROUTES = [("/v1/collect", PK), ("/v1/events", WRITE)]


@pytest.mark.parametrize(("path", "secret"), ROUTES)
@pytest.mark.parametrize("charset", ["x-no-such-charset", "rot13", "base64"])
async def test_a_charset_is_never_a_500_nor_a_way_around_utf8(
    client: TestClient, state: MemoryState, path: str, secret: str, charset: str
) -> None:
    """`request.text()` decoded with whatever charset the Content-Type names: an unknown one
    (or a codec that is not a text encoding, such as rot13 or base64) raised LookupError, a 500
    with a traceback. Events bodies are UTF-8 JSON whatever the header says (RFC 8259 defines
    no charset for JSON), so a latin-1 body is a 400 too."""
    body = json.dumps([ev("page_view", item=None)]).encode()
    headers = {**bearer(secret), "Content-Type": f"text/plain; charset={charset}"}
    r = await client.post(path, data=body, headers=headers)
    assert r.status == 202, await r.text()
    assert (await r.json())["accepted"] == 1
    latin1 = json.dumps([ev("search", item=None, props={"query": "thé"})], ensure_ascii=False)
    headers = {**bearer(secret), "Content-Type": "application/json; charset=latin-1"}
    r = await client.post(path, data=latin1.encode("latin-1"), headers=headers)
    assert r.status == 400 and r.content_type == "application/problem+json"
    assert "UTF-8" in (await r.json())["detail"]
    assert len(state.produced) == 1


async def _chunks(total: int, piece: bytes = b" " * 16384) -> AsyncIterator[bytes]:
    """`total` bytes of a JSON array sent with chunked transfer encoding (no Content-Length)."""
    yield b"["
    sent = 2
    while sent + len(piece) < total:
        yield piece
        sent += len(piece)
    yield b"]"


async def test_a_chunked_body_past_the_collect_bound_is_413(
    client: TestClient, state: MemoryState
) -> None:
    """The 64 KiB bound of /v1/collect was checked on the Content-Length only: a body sent
    chunked (no Content-Length) was read and parsed up to the app's 10 MiB."""
    r = await client.post("/v1/collect", data=_chunks(MAX_BODY * 4), headers=bearer(PK))
    assert r.status == 413 and r.content_type == "application/problem+json"
    assert str(MAX_BODY) in (await r.json())["detail"]
    events = json.dumps([ev("page_view", item=None)] * 3).encode()

    async def small() -> AsyncIterator[bytes]:
        yield events

    r = await client.post("/v1/collect", data=small(), headers=bearer(PK))
    assert r.status == 202 and (await r.json())["accepted"] == 3  # chunked and within: taken
    assert len(state.produced) == 3


@pytest.mark.parametrize(
    ("path", "secret", "limit"),
    [("/v1/collect", PK, MAX_EVENTS), ("/v1/events", WRITE, MAX_POSTED)],
)
async def test_ndjson_stops_being_read_past_the_event_limit(
    client: TestClient, state: MemoryState, path: str, secret: str, limit: int
) -> None:
    """NDJSON was parsed to its last line before the event count was checked: 10 MiB of `{}`
    lines are some 3.5 million json.loads calls on the event loop (seconds with every other
    request of the process waiting) for an answer that is a 413 anyway. Reading stops at the
    first line past the limit: what follows it (here, a line that is not JSON) is never read."""
    lines = [json.dumps(ev("page_view", item=None))] * (limit + 1) + ["{not json"]
    r = await client.post(path, data="\n".join(lines).encode(), headers=bearer(secret))
    assert r.status == 413, await r.text()
    assert f"at most {limit} events" in (await r.json())["detail"]
    assert not state.produced


@pytest.mark.parametrize(
    ("path", "secret", "limit"),
    [("/v1/collect", PK, MAX_EVENTS), ("/v1/events", WRITE, MAX_POSTED)],
)
async def test_a_json_array_stops_being_read_past_the_event_limit(
    client: TestClient, state: MemoryState, path: str, secret: str, limit: int
) -> None:
    """A JSON array was parsed whole (json.loads) before the event count was checked: 10 MiB of
    `{}` items cost a quarter of a second or more of the event loop for a 413 anyway. Reading
    stops at the first item past the limit, as for NDJSON: what follows it (here, an item that is
    not JSON and no closing bracket) is never read; before, this body was a 400."""
    item = json.dumps(ev("page_view", item=None))
    body = "[" + ",".join([item] * (limit + 1)) + ", {not json"
    r = await client.post(path, data=body.encode(), headers=bearer(secret))
    assert r.status == 413, await r.text()
    assert f"at most {limit} events" in (await r.json())["detail"]
    assert not state.produced
    within = "[" + ",".join([item] * limit) + "]"
    r = await client.post(path, data=within.encode(), headers=bearer(secret))
    assert r.status == 202 and (await r.json())["accepted"] == limit


async def test_refused_origins_take_from_the_address_allowance_too(state: MemoryState) -> None:
    """Every request to /v1/collect takes a token from its address's bucket, refusals included
    (api/collect.py): an Origin refusal took none, so one address could be refused at any rate.
    A refused origin never gets CORS headers, not even on the 429."""
    async with await _client(state, per_minute=3) as client:
        for _ in range(3):
            headers = {"Origin": OTHER, **bearer(PK)}
            r = await client.post("/v1/collect", json=[ev("page_view", item=None)], headers=headers)
            assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
        r = await client.post("/v1/collect", json=[ev("page_view", item=None)], headers=headers)
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
        headers = {"Origin": SHOP, **bearer(PK)}
        r = await client.post("/v1/collect", json=[ev("page_view", item=None)], headers=headers)
        assert r.status == 429 and r.headers["Access-Control-Allow-Origin"] == SHOP
    assert not state.produced


async def test_answers_made_of_errors_carry_cors_and_vary_too() -> None:
    """A body that does not inflate (400) and a broker that takes nothing (503) were answered
    by the errors middleware, outside the collector's: without `Access-Control-Allow-Origin`
    (the listed page's tag saw a network error, not the problem) and without `Vary: Origin`,
    which every /v1/collect answer carries. Both are answered with them now."""
    headers = {"Origin": SHOP, **bearer(PK), "Content-Encoding": "gzip"}
    async with await _client(MemoryState()) as client:
        r = await client.post("/v1/collect", data=b"not gzip", headers=headers)
        assert r.status == 400 and r.content_type == "application/problem+json"
        assert r.headers["Access-Control-Allow-Origin"] == SHOP
        assert r.headers["Vary"] == "Origin"
    async with await _client(BrokerAway()) as client:
        body = [ev("page_view", item=None)]
        r = await client.post("/v1/collect", json=body, headers={"Origin": SHOP, **bearer(PK)})
        assert r.status == 503 and (await r.json())["title"] == "Broker unavailable"
        assert r.headers["Access-Control-Allow-Origin"] == SHOP
        assert r.headers["Vary"] == "Origin"


async def profile_events(client: TestClient, user: str) -> dict[str, int]:
    r = await client.get(f"/v1/users/{user}/profile", headers=bearer(READ))
    assert r.status == 200, await r.text()
    events: dict[str, int] = (await r.json())["events"]
    return events


async def test_a_publishable_key_cannot_spend_the_shops_event_ids(client: TestClient) -> None:
    """A profile applies an event_id once, whoever sent it: a page_view sent through the
    public key with the event_id the shop's server would give an order (`order-1001`) made the
    server's purchase a repeat, dropped. Collected events' ids are kept apart (stored as
    `collect:<id>`), so they still repeat among themselves (a beacon delivered twice is one
    event) but never meet the server's."""
    view = ev("page_view", user="cust-7", item=None, event_id="order-1001")
    for _ in range(2):
        r = await client.post("/v1/collect", json=[view], headers=bearer(PK))
        assert (await r.json())["accepted"] == 1
    purchase = ev("purchase", user="cust-7", event_id="order-1001")
    r = await client.post("/v1/events", json=[purchase], headers=bearer(WRITE))
    assert (await r.json())["accepted"] == 1
    assert (await profile_events(client, "cust-7")) == {"page_view": 1, "purchase": 1}


async def test_a_collected_event_id_of_any_allowed_length_is_stored_marked(
    client: TestClient, state: MemoryState
) -> None:
    """An event id too long to fit beside `collect:` within 128 characters (the contract allows
    128) is taken, stored as the mark and its digest: within the bound, and the same for a
    repeat (a beacon delivered twice folds once)."""
    longest = ev("page_view", item=None, event_id="e" * MAX_ID)
    fits = ev("page_view", item=None, event_id="e" * (MAX_ID - len(COLLECTED_PREFIX)))
    r = await client.post("/v1/collect", json=[longest, fits, longest], headers=bearer(PK))
    answer = await r.json()
    assert (answer["accepted"], answer["rejected"]) == (3, 0), answer
    ids = [e.event_id for e in state.produced]
    digest = COLLECTED_PREFIX + "sha256:" + hashlib.sha256(b"e" * MAX_ID).hexdigest()
    assert ids == [digest, COLLECTED_PREFIX + fits["event_id"], digest]
    assert all(len(i) <= MAX_ID for i in ids)
