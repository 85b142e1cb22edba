"""Block GETs answered from the connection's bytes (api/wire.py): the same bytes as the full chain,
in request order, with everything the front does not answer handed to aiohttp's parser whole."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.hot import Front, HotRunner
from api.limits import LIMITER
from api.observability import TELEMETRY
from api.wire import MAX_BODY, HotRequestHandler, parse_head
from tests.api.test_hot import HotTestServer, _app, _client, block_requests

PATH = "/v1/users/u1/blocks/recommendations"
AUTH = "Authorization: Bearer s3cret-kkkkkkkkkkkkkkkkk"


def _get(path: str = PATH, *lines: str, version: str = "1.1", rid: str = "w-1") -> bytes:
    head = [f"GET {path} HTTP/{version}", "Host: persona.test", f"X-Request-Id: {rid}", *lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def _post(path: str, body: bytes, *lines: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: persona.test", "X-Request-Id: w-1", *lines]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    """One response off the connection (a Content-Length body, or up to EOF), Date blanked."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    if length is not None:
        body = await reader.readexactly(int(length.group(1)))
    elif head.startswith((b"HTTP/1.1 304", b"HTTP/1.0 304")):
        body = b""
    else:
        body = await reader.read()
    return re.sub(rb"\r\nDate: [^\r]+\r\n", b"\r\nDate: -\r\n", head) + body


async def _conversation(client: TestClient, chunks: list[bytes], answers: int) -> list[bytes]:
    """Write `chunks` to one connection (each as its own write), then read `answers`."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.005)
        return [await asyncio.wait_for(_read_answer(reader), 5) for _ in range(answers)]
    finally:
        writer.close()


async def _one_by_one(client: TestClient, requests: list[bytes]) -> list[bytes]:
    """Each request's answer on a connection of its own: what the chain says of it alone."""
    return [(await _conversation(client, [request], 1))[0] for request in requests]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[TestClient, TestClient]]:
    """(HotRunner's server: wire front, the full chain)."""
    async with await _client("front") as hot, await _client("chain") as chain:
        yield hot, chain


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """[answers the wire front wrote, answers Front gave through aiohttp's request path]."""
    counts = [0, 0]
    wire, answer = Front.wire, Front.answer

    def counted_wire(self: Front, head: object) -> bytes | None:
        out = wire(self, head)  # type: ignore[arg-type]
        counts[0] += out is not None
        return out

    def counted_answer(self: Front, request: object) -> object:
        out = answer(self, request)  # type: ignore[arg-type]
        counts[1] += out is not None
        return out

    monkeypatch.setattr(Front, "wire", counted_wire)
    monkeypatch.setattr(Front, "answer", counted_answer)
    yield counts


# -- framing ---------------------------------------------------------------------------------------


def test_a_plain_head_is_framed_with_its_fields() -> None:
    framed = parse_head(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAUTHORIZATION:  Bearer k \r\nHost: y")
    assert framed is not None
    head, length = framed
    assert head is not None and length == 0
    assert (head.method, head.target, head.version) == (b"GET", b"/a?b=1", b"HTTP/1.1")
    assert head.fields == {b"host": b"x", b"authorization": b"Bearer k"}  # the first value kept
    framed = parse_head(b"POST /v1/events HTTP/1.1\r\nContent-Length: 12")
    assert framed is not None and framed[1] == 12
    assert parse_head(b"GET / HTTP/1.1 extra\r\nHost: x") == (None, 0)  # aiohttp refuses it


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3",
        b"POST / HTTP/1.1\r\nContent-Length: -3",
        b"POST / HTTP/1.1\r\nContent-Length: 0x10",
        b"POST / HTTP/1.1\r\nContent-Length: " + str(MAX_BODY + 1).encode(),
        b"GET / HTTP/1.1\r\nHost: x\nX: y",  # a bare LF
        b"GET / HTTP/1.1\r\nHost: x\rX: y",  # a bare CR
        b"GET / HTTP/1.1\r\nHost: \x01",
        b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9",
        b"GET / HTTP/1.1\r\nno colon here",
        b"GET / HTTP/1.1\r\nBad Name: x",
        b"GET / HTTP/1.1\r\n Folded: x",
    ],
)
def test_what_cannot_be_framed_with_certainty_is_left_to_aiohttp(head: bytes) -> None:
    assert parse_head(head) is None


# -- on the wire -----------------------------------------------------------------------------------


async def test_pipelined_mixed_requests_are_answered_in_order_as_the_chain_answers(
    pair: tuple[TestClient, TestClient], wired: list[int]
) -> None:
    hot, chain = pair
    etag = (
        await hot.get(PATH, headers={"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"})
    ).headers["ETag"]
    requests = [
        _get(PATH, AUTH),
        _get(PATH + "?format=json", AUTH),
        _post("/v1/blocks:batch", b'{"users": ["u1"], "blocks": ["recommendations"]}', AUTH),
        _get(PATH, AUTH, f"If-None-Match: {etag}"),
        _get(PATH),  # 401, the chain's
        _get("/v1/users/nobody/blocks/winback", AUTH),  # the fallback
        _get("/v1/users/u%31/blocks/recommendations", AUTH),  # the router decodes it
        _get(PATH + "?format=%6Ason", AUTH),  # the query parser decodes it
        _get("/v1/users/u1/blocks/no_such_block", AUTH),  # 404
        _get("/healthz"),
        _get(PATH, AUTH),
    ]
    expected = await _one_by_one(chain, requests)
    wired[:] = [0, 0]
    reader, writer = await asyncio.open_connection(hot.host, hot.port)
    try:
        writer.write(b"".join(requests))
        answers = [await asyncio.wait_for(_read_answer(reader), 5) for _ in requests]
        assert answers == expected
        # the two GETs before the POST came from the wire; aiohttp answered the rest of the
        # burst, which arrived while it had the POST to answer
        assert wired[0] == 2
        writer.write(_get(PATH, AUTH))  # aiohttp is idle again: the wire answers
        assert await asyncio.wait_for(_read_answer(reader), 5) == expected[0]
        assert wired[0] == 3
    finally:
        writer.close()


async def test_format_given_twice_is_left_to_the_application(
    pair: tuple[TestClient, TestClient], wired: list[int]
) -> None:
    """The wire front took the first `format` and answered 200 from the connection's bytes; a
    repeated parameter is the application's 400 naming it, as the chain answers it."""
    hot, chain = pair
    request = _get(PATH + "?format=json&format=html", AUTH)
    expected = await _one_by_one(chain, [request])
    wired[:] = [0, 0]
    answers = await _conversation(hot, [request, _get(PATH, AUTH)], 2)
    assert answers[0] == expected[0] and answers[0].startswith(b"HTTP/1.1 400")
    assert b'"parameter": "format"' in answers[0]
    assert answers[1].startswith(b"HTTP/1.1 200") and wired[0] == 1  # the plain GET: the wire's


async def test_requests_split_anywhere_are_framed(
    pair: tuple[TestClient, TestClient], wired: list[int]
) -> None:
    hot, chain = pair
    requests = [
        _get(PATH, AUTH),
        _post("/v1/blocks:batch", b'{"users": ["u1"], "blocks": ["recommendations"]}', AUTH),
        _get(PATH, AUTH),
    ]
    expected = await _one_by_one(chain, requests)
    stream = b"".join(requests)
    for cut in (1, 7, 50):
        chunks = [stream[i : i + cut] for i in range(0, len(stream), cut)]
        assert await _conversation(hot, chunks, len(requests)) == expected
    assert wired[0] >= 3


async def test_what_aiohttp_must_read_takes_the_connection_for_good(
    pair: tuple[TestClient, TestClient], wired: list[int]
) -> None:
    hot, chain = pair
    body = b'{"users": ["u1"], "blocks": ["recommendations"]}'
    chunked = (
        b"POST /v1/blocks:batch HTTP/1.1\r\nHost: persona.test\r\nX-Request-Id: w-1\r\n"
        + AUTH.encode()
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    expected = await _one_by_one(chain, [_get(PATH, AUTH), chunked, _get(PATH, AUTH)])
    wired[:] = [0, 0]
    answers = await _conversation(hot, [_get(PATH, AUTH), chunked, _get(PATH, AUTH)], 3)
    assert answers == expected
    assert wired == [1, 1]  # after the chunked body, aiohttp's parser read the last GET too


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET " + PATH.encode() + b" HTTP/1.1\nHost: persona.test\n\n",  # bare LFs
        b"GET "
        + PATH.encode()
        + b" HTTP/1.1\r\nHost: persona.test\r\nX-Long: "
        + b"x" * 20_000
        + b"\r\n\r\n",  # longer than aiohttp's field limit
        b"GET /v1/users/caf\xc3\xa9/blocks/recommendations HTTP/1.1\r\nHost: p\r\n\r\n",
        b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: persona.test\r\nBad Name: 1\r\n\r\n",
    ],
)
async def test_odd_requests_get_the_parsers_problem_answer(
    pair: tuple[TestClient, TestClient], request_bytes: bytes
) -> None:
    hot, chain = pair
    answer = (await _conversation(hot, [request_bytes], 1))[0]
    assert answer == (await _one_by_one(chain, [request_bytes]))[0]
    assert re.match(rb"HTTP/1\.[01] 400 Bad Request\r\n", answer), answer[:40]
    assert b"\r\nContent-Type: application/problem+json; charset=utf-8\r\n" in answer


async def test_answers_from_the_wire_are_counted_like_the_chains(
    pair: tuple[TestClient, TestClient], wired: list[int]
) -> None:
    hot, _ = pair
    telemetry = hot.server.app[TELEMETRY]
    before = telemetry.requests
    await _conversation(hot, [_get(PATH, AUTH) * 5], 5)
    assert wired[0] == 5
    assert telemetry.requests - before == 5
    text = await (await hot.get("/metrics")).text()
    assert block_requests(text, "200") == 5.0
    assert re.search(r'persona_blocks_served_total\{block="recommendations",[^}]*\} 5\.0', text), (
        text
    )


async def test_a_rate_limited_key_is_refused_once_and_counted_once(
    pair: tuple[TestClient, TestClient], wired: list[int]
) -> None:
    hot, _ = pair
    slow = "Authorization: Bearer slowsecret-kkkkkkkkkkkkk"  # 1 request/s
    answers = await _conversation(hot, [_get(PATH, slow), _get(PATH, slow)], 2)
    assert answers[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert answers[1].startswith(b"HTTP/1.1 429 ") and b"\r\nRetry-After: 1\r\n" in answers[1]
    assert hot.server.app[LIMITER].limited == 1
    assert wired[0] == 1


async def test_a_client_that_does_not_read_gets_every_answer_in_order(
    pair: tuple[TestClient, TestClient], wired: list[int]
) -> None:
    hot, _ = pair
    count = 3000  # ~2 MB of answers: the transport's writing pauses on the way
    requests = [_get(PATH, AUTH, "X-Request-Id: second", rid=f"n-{n}") for n in range(count)]
    reader, writer = await asyncio.open_connection(hot.host, hot.port, limit=2**20)
    try:
        writer.write(b"".join(requests))
        await writer.drain()
        await asyncio.sleep(0.5)  # let the server's writes back up
        ids = []
        for _ in range(count):
            answer = await asyncio.wait_for(_read_answer(reader), 10)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            found = re.search(rb"\r\nX-Request-Id: ([^\r]+)\r\n", answer)
            ids.append(found.group(1).decode() if found else None)
    finally:
        writer.close()
    assert ids == [f"n-{n}" for n in range(count)]  # in order; the first X-Request-Id kept
    assert wired[0] > 0 and sum(wired) == count


async def test_an_idle_connection_closes_after_the_keep_alive_timeout(wired: list[int]) -> None:
    runner = HotRunner(_app(), keepalive_timeout=0.4)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            loop = asyncio.get_running_loop()
            last = loop.time()
            for _ in range(8):  # 1.6 s of requests, each well within the timeout
                await asyncio.sleep(0.2)
                writer.write(_get(PATH, AUTH))
                await writer.drain()
                assert (await _read_answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
                last = loop.time()
            assert wired[0] == 8  # kept open, every answer from the wire
            assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed when idle
            idle = loop.time() - last
            assert 0.3 <= idle <= 3.0  # ~the timeout after the last answer (2x at most, + slack)
        finally:
            writer.close()
    finally:
        await runner.cleanup()


async def test_the_runner_serves_with_the_wire_front() -> None:
    async with TestClient(HotTestServer(_app())) as hot:
        await hot.get(PATH, headers={"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"})
        server = hot.server.runner.server  # type: ignore[union-attr]
        assert server is not None
        assert any(isinstance(c, HotRequestHandler) for c in server.connections)
    async with TestClient(TestServer(_app())) as plain:  # aiohttp's own runner: no front
        await plain.get(PATH, headers={"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"})
        server = plain.server.runner.server  # type: ignore[union-attr]
        assert server is not None
        assert not any(isinstance(c, HotRequestHandler) for c in server.connections)


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        ([f"X-Pad-{n}: {'p' * 90}" for n in range(100)], b"200"),  # ~10 KB of short lines
        ([f"X-Long: {'x' * 9_000}"], b"400"),  # one line over aiohttp's limit, sent whole
    ],
)
async def test_a_head_over_aiohttps_line_limit_is_aiohttps_to_answer(
    pair: tuple[TestClient, TestClient], wired: list[int], lines: list[str], status: bytes
) -> None:
    """A keep-alive block GET the front could answer, but whose head is longer than aiohttp
    lets a line be: the front does not answer it (it would answer a request aiohttp refuses),
    aiohttp's parser reads it and answers as the chain does."""
    hot, chain = pair
    request = _get(PATH, AUTH, *lines)
    expected = await _one_by_one(chain, [request])
    wired[:] = [0, 0]
    answers = await _conversation(hot, [request], 1)
    assert answers == expected
    assert answers[0].split(b" ", 2)[1] == status
    assert wired[0] == 0


@pytest.mark.parametrize("size", [600_000, MAX_BODY - 1_000, 2 * MAX_BODY])
async def test_a_large_body_is_answered_at_once(
    pair: tuple[TestClient, TestClient], size: int
) -> None:
    """A body the handler's buffer cannot take in one piece: aiohttp's parser stops feeding it and
    goes on when the handler has read some (it calls `data_received(b"")` for that). The front
    swallowed that call, and the request waited for the request timeout (a 503 after 10 s)."""
    hot, chain = pair
    body = b'{"user_ids": ["u1"], "block": "recommendations"}'
    body += b" " * (size - len(body))  # valid JSON of `size` bytes
    request = _post("/v1/blocks:batch", body, AUTH, "Content-Type: application/json")
    expected = await _one_by_one(chain, [request])
    answers = await _conversation(hot, [request], 1)  # _read_answer gives up after 5 s
    assert answers == expected
    assert answers[0].startswith(b"HTTP/1.1 200 OK")
