"""What aiohttp refuses before the application sees a request (api/protocol.py): over-long request
and header lines, garbage, bad framing, a failure outside every middleware. Each is a problem body
(`application/problem+json`) that does not echo the client's bytes, on the worker's and readers'
runner (`HotRunner`) and on `ProblemRunner`; the connection is closed after it."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadStatusLine, LineTooLong
from aiohttp.test_utils import TestClient, TestServer

from api.protocol import refusal_detail
from tests.api.test_hot import HotTestServer, ProblemTestServer, _app

AUTH = b"Authorization: Bearer s3cret-kkkkkkkkkkkkkkkkk\r\n"
MARK = "zq7marker"  # hostile bytes the answers must not echo


def _request(target: bytes, *lines: bytes, method: bytes = b"GET") -> bytes:
    return (
        method + b" " + target + b" HTTP/1.1\r\nHost: persona.test\r\n" + b"".join(lines) + b"\r\n"
    )


HOSTILE = {
    # a request line over aiohttp's 8,190-byte limit: the query Schemathesis once generated
    "long request line": _request(
        b"/v1/items/A/similar?brand=" + MARK.encode() * 1_200 + b"&category=x", AUTH
    ),
    "long block GET line": _request(
        b"/v1/users/u1/blocks/recommendations?exclude=" + MARK.encode() * 1_200, AUTH
    ),
    "long header line": _request(
        b"/v1/users/u1/blocks/recommendations", AUTH, b"X-Long: " + MARK.encode() * 2_000 + b"\r\n"
    ),
    "TLS on the HTTP port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARK.encode() * 20,
    "garbage request line": MARK.encode() * 3 + b"\r\n\r\n",
    "bad content length": _request(
        b"/v1/events", AUTH, b"Content-Length: " + MARK.encode() + b"\r\n", method=b"POST"
    ),
    "bare LF and a header without a colon": b"GET / HTTP/1.1\nHost: p\n" + MARK.encode() + b"\n\n",
}


async def _exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data` on a fresh connection; (status, headers, body) of the answer, read up to the
    connection's close (which must come: the refusal closes it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)  # EOF: the server closed the connection
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3}) ", lines[0])
    assert match, lines[0]
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(match.group(1)), headers, body


@pytest.fixture(params=["hot", "problem"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[TestClient]:
    server = HotTestServer(_app()) if request.param == "hot" else ProblemTestServer(_app())
    async with TestClient(server) as started:
        yield started


@pytest.mark.parametrize("data", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_a_request_the_parser_refuses_gets_a_problem_body(
    client: TestClient, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        status, headers, body = await _exchange(client.port, data)
    assert status == 400
    assert headers["Content-Type"] == "application/problem+json; charset=utf-8"
    problem = json.loads(body)
    assert problem["status"] == 400 and problem["title"] == "Bad Request"
    assert problem["detail"] and MARK not in problem["detail"]
    assert MARK.encode() not in body
    # anyone can send these bytes: they must not put tracebacks in an operator's log
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # and the server goes on answering
    assert (await client.get("/healthz")).status == 200


async def test_the_server_answers_on_after_a_refusal_on_another_connection(
    client: TestClient,
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /v1/users/u1/blocks/recommendations HTTP/1.1\r\nHost: p\r\n" + AUTH)
    await writer.drain()  # a request left half-sent on one connection
    status, _, _ = await _exchange(client.port, HOSTILE["long request line"])
    assert status == 400
    answer = await client.get(
        "/v1/users/u1/blocks/recommendations", headers={"Authorization": AUTH[15:-2].decode()}
    )
    assert answer.status == 200
    writer.close()


async def _explode(request: web.Request) -> web.Response:
    raise RuntimeError(f"internal state {MARK}")


async def test_a_failure_outside_every_middleware_is_a_500_problem_without_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = web.Application()  # no errors middleware: aiohttp's connection handler answers
    app.router.add_get("/boom", _explode)
    async with TestClient(ProblemTestServer(app)) as started:
        with caplog.at_level(logging.ERROR):
            status, headers, body = await _exchange(
                started.port, b"GET /boom HTTP/1.1\r\nHost: p\r\n\r\n"
            )
    assert status == 500
    assert headers["Content-Type"] == "application/problem+json; charset=utf-8"
    problem = json.loads(body)
    assert problem["status"] == 500 and problem["title"] == "Internal Server Error"
    assert MARK not in problem["detail"]
    assert MARK in caplog.text  # the operator's log has the failure, the client does not


async def test_a_plain_aiohttp_runner_would_answer_in_text() -> None:
    """The gap `ProblemRunner` closes, shown on aiohttp's own runner (if aiohttp ever answers
    with a problem body itself, this test says the layer can go)."""

    class PlainTestServer(TestServer):
        async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
            return web.AppRunner(self.app, **kwargs)

    async with TestClient(PlainTestServer(_app())) as started:
        status, headers, _ = await _exchange(started.port, HOSTILE["long request line"])
    assert status == 400
    assert headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        (LineTooLong(MARK, 8190), "the request line or a header line is longer than 8,190 bytes"),
        (BadStatusLine(f"{MARK} with more"), "Bad status line"),
        (RuntimeError(MARK), "the request could not be read"),
        (None, "the request could not be read"),
    ],
)
def test_refusal_detail_keeps_the_reason_and_drops_the_bytes(
    exc: BaseException | None, detail: str
) -> None:
    said = refusal_detail(exc)
    assert MARK not in said
    assert said == detail
