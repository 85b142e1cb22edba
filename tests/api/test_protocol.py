"""What aiohttp refuses before the application sees a request (api/protocol.py): over-long request
and header lines, garbage, bad framing, a failure outside every middleware. Each is a problem body
(`application/problem+json`) that does not echo the client's bytes, on the worker's and readers'
runner (`HotRunner`) and on `ProblemRunner`; the connection is closed after it. And connections
are bounded: a flood beyond the cap gets 503s, a trickling or idle connection is closed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, InvalidHeader, LineTooLong
from aiohttp.test_utils import TestClient, TestServer

from api.hot import HotRunner
from api.openapi import openapi_document
from api.protocol import (
    KEEPALIVE_SECONDS,
    ProblemRunner,
    ProblemServer,
    connection_cap,
    refusal_detail,
)
from tests.api.test_hot import HotTestServer, ProblemTestServer, _app
from tests.conftest import ROOT

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
    "too many headers": _request(
        b"/healthz", *(b"X-%s: 1\r\n" % MARK.encode() for _ in range(200))
    ),
    "content length and chunked": _request(
        b"/v1/events", AUTH, b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", method=b"POST"
    )
    + b"0\r\n\r\n",
    # the header Schemathesis once generated on GET routes whose document listed no 400
    "empty content length on a GET": _request(
        b"/v1/users/u1/export", AUTH, b"Content-Length:\r\nX-" + MARK.encode() + b": 1\r\n"
    ),
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + MARK.encode(),
    "NUL in the path": _request(
        b"/v1/users/" + MARK.encode() + b"\x00/blocks/recommendations", AUTH
    ),
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


def test_the_document_lists_the_parsers_400_on_every_operation() -> None:
    """The parser refuses such requests before any route sees them, on every route: each
    operation of the API document must list the 400 problem, or a conforming client (and
    Schemathesis) reads the answer as undocumented."""
    document = openapi_document()
    missing = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "400" not in operation.get("responses", {})
    ]
    assert not missing, missing


SECRET = b"s3cret-kkkkkkkkkkkkkkkkk-" + MARK.encode()
SECRETS_REFUSED = {
    "a control character in Authorization": _request(
        b"/healthz", b"Authorization: Bearer " + SECRET + b"\x01\r\n"
    ),
    "Authorization without its colon": b"GET /healthz HTTP/1.1\r\nHost: p\r\n"
    + b"Authorization Bearer "
    + SECRET
    + b"\r\n\r\n",
    "a control character after ?key=": _request(
        b"/v1/collect?key=" + SECRET + b"\x01", method=b"POST"
    ),
    "a control character after a click token": _request(b"/c/" + SECRET + b".sig\x01"),
}


@pytest.mark.parametrize("data", list(SECRETS_REFUSED.values()), ids=list(SECRETS_REFUSED))
async def test_a_refused_requests_log_line_quotes_none_of_its_bytes(
    client: TestClient, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """The parser's message quotes the offending line: the `refused a request` debug line
    wrote an API key sent in a malformed header or query (or a click token) into the log."""
    with caplog.at_level(logging.DEBUG):
        status, _, _ = await _exchange(client.port, data)
    assert status == 400
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused a request")]
    assert refusals  # still logged: the address and what was wrong
    assert all("127.0.0.1" in r.getMessage() for r in refusals)
    # aiohttp's own access log (the test server's) is off in the worker and readers
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert MARK not in logged


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
        (
            BadHttpMessage("Transfer-Encoding can't be present with Content-Length"),
            "Transfer-Encoding can't be present with Content-Length",
        ),
        (InvalidHeader(f"{MARK}\n"), "Invalid HTTP header"),
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


@asynccontextmanager
async def _serving(runner: web.AppRunner) -> AsyncIterator[int]:
    """`runner` serving on a free loopback port (yielded)."""
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        yield server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()


RUNNERS: dict[str, Callable[..., web.AppRunner]] = {"hot": HotRunner, "problem": ProblemRunner}


@pytest.mark.parametrize("kind", list(RUNNERS))
async def test_connections_beyond_the_cap_get_a_503_problem_and_are_closed(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with _serving(RUNNERS[kind](_app(), max_connections=3)) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await asyncio.sleep(0.05)
        with caplog.at_level(logging.WARNING):
            refused = [await _exchange(port, _request(b"/healthz")) for _ in range(2)]
        for status, headers, body in refused:
            assert status == 503
            assert headers["Content-Type"] == "application/problem+json"
            assert headers["Retry-After"] == "1"
            assert json.loads(body)["status"] == 503
        warnings = [r for r in caplog.records if "refusing new ones with 503" in r.getMessage()]
        assert len(warnings) == 1  # a flood is one line in the log, not one per connection
        # the held connections are served; once one closes, a new connection is too
        reader, writer = held[0]
        writer.write(_request(b"/healthz", b"Connection: close\r\n"))
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200 OK")
        writer.close()
        await asyncio.sleep(0.05)
        status, _, _ = await _exchange(port, _request(b"/healthz", b"Connection: close\r\n"))
        assert status == 200
        await asyncio.sleep(0.05)
        status, _, body = await _exchange(port, _request(b"/metrics", b"Connection: close\r\n"))
        text = body.decode()
        assert "\npersona_http_connections_refused_total 2.0\n" in text
        assert "\npersona_http_connections_max 3.0\n" in text
        assert "\npersona_http_connections 3.0\n" in text  # two held, and this one
        for _, other in held[1:]:
            other.close()


@pytest.mark.parametrize("kind", list(RUNNERS))
async def test_a_trickling_request_head_cannot_hold_a_connection(kind: str) -> None:
    """A client sending its head a byte at a time (slowloris) is closed at the keep-alive
    deadline, however often its bytes arrive."""
    async with _serving(RUNNERS[kind](_app(), keepalive_timeout=0.5)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        closed_after = None
        for byte in _request(b"/healthz") * 100:
            if reader.at_eof() or writer.is_closing():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            try:
                if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                    break
            except TimeoutError:
                pass
            if loop.time() - start > 5:
                break
        closed_after = loop.time() - start
        writer.close()
    assert closed_after < 3, f"the connection was still open after {closed_after:.1f} s"


async def test_idle_connections_close_after_75_seconds_by_default() -> None:
    """aiohttp's own default is 3,630 s: an idle connection held a descriptor for an hour."""
    for runner in (HotRunner(_app()), ProblemRunner(_app())):
        await runner.setup()
        try:
            server = runner.server
            assert server is not None
            handler = server()
            assert handler.keepalive_timeout == KEEPALIVE_SECONDS == 75.0
        finally:
            await runner.cleanup()


@pytest.mark.parametrize(
    ("limit", "cap"), [(1_024, 512), (20_000, 15_904), (1_048_576, 1_044_480), (20, 16)]
)
def test_the_cap_leaves_descriptors_for_the_store(limit: int, cap: int) -> None:
    assert connection_cap(limit) == cap


FD_SERVER = r"""
import asyncio, resource, sys
from pathlib import Path
from aiohttp import web
from rocksdict import Rdict
from api.protocol import ProblemRunner

resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))  # the cap: 128 connections
db = Rdict(sys.argv[1])
count = 0

async def write(request: web.Request) -> web.Response:
    global count
    count += 1
    db[f"k{count}"] = b"v" * 100
    db.flush()  # a new table file, as the worker's store makes
    Path(sys.argv[1], f"extra-{count}").write_text("x")
    return web.json_response({"written": count})

async def main() -> None:
    app = web.Application()
    app.router.add_post("/write", write)
    runner = ProblemRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], runner.server.max_connections, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_connection_flood_leaves_the_store_its_descriptors(tmp_path: Path) -> None:
    """A process limited to 256 descriptors (cap 128 connections) holding a RocksDB store: 400
    connections opened at once get 503s beyond the cap, and the store can still write a new
    table file and the process open a file (without the cap, the flood takes every descriptor
    and the write fails with `Too many open files`)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FD_SERVER, str(tmp_path / "db"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        port, cap = map(int, (await asyncio.wait_for(proc.stdout.readline(), 30)).split())
        assert cap == 128
        control = await asyncio.open_connection("127.0.0.1", port)
        flood = []
        for _ in range(400):
            try:
                flood.append(await asyncio.open_connection("127.0.0.1", port))
            except OSError:
                break
        await asyncio.sleep(0.5)

        async def first_bytes(reader: asyncio.StreamReader) -> bytes:
            try:
                return await asyncio.wait_for(reader.read(200), 1.0)
            except TimeoutError:
                return b""  # held: served when it asks

        answers = await asyncio.gather(*(first_bytes(reader) for reader, _ in flood))
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(flood) - len(refused) <= 128 and len(refused) >= 400 - 128
        reader, writer = control
        for _ in range(3):
            writer.write(b"POST /write HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 OK"), head
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
        for _, flooding in flood:
            flooding.close()
        writer.close()
    finally:
        proc.kill()
        await proc.wait()


def _pipelined_gets(count: int) -> bytes:
    return b"".join(
        _request(b"/v1/users/u%d/blocks/recommendations" % n, AUTH) for n in range(count)
    )


def _batch_requests(count: int) -> bytes:
    body = json.dumps(
        {"block": "recommendations", "user_ids": [f"user-{n:04d}" for n in range(1000)]}
    ).encode()
    one = _request(
        b"/v1/blocks:batch",
        AUTH,
        b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body),
        method=b"POST",
    )
    return (one + body) * count


STALLING = {  # (runner, what a client that never reads sends)
    "hot: pipelined block GETs": ("hot", _pipelined_gets(3000)),
    "problem: pipelined block GETs": ("problem", _pipelined_gets(3000)),
    "problem: 1000-user batches": ("problem", _batch_requests(3)),
}


@pytest.mark.parametrize("case", list(STALLING))
async def test_a_client_that_never_reads_its_answers_is_dropped(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender that asks and never reads the answers (a hung ESP worker, or on purpose, on as
    many connections as the cap allows) held each connection and the answers queued in it
    (hundreds of KB of block GETs, MBs of a batch) for as long as its socket stayed open: a
    request being written is never idle, so no keep-alive deadline applied. A connection whose
    writing stays paused (its client takes nothing) for SEND_STALL_SECONDS is aborted, its
    buffer freed, and counted."""
    import api.protocol

    monkeypatch.setattr(api.protocol, "SEND_STALL_SECONDS", 0.5, raising=False)
    kind, data = STALLING[case]
    runner = RUNNERS[kind](_app())
    async with _serving(runner) as port:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes little in flight
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        try:
            sending = asyncio.ensure_future(loop.sock_sendall(sock, data))
            server = runner.server
            assert server is not None
            deadline = loop.time() + 30
            while loop.time() < deadline and not any(c.writing_paused for c in server.connections):
                await asyncio.sleep(0.02)  # the answers back up: the server's writing pauses
            assert server.connections, "the answers never backed up"
            while server.connections and loop.time() < deadline:
                await asyncio.sleep(0.1)
            assert not server.connections, "a client that never reads still holds its connection"
            sending.cancel()
            assert isinstance(server, ProblemServer) and server.stalled == 1
            assert "\npersona_http_connections_stalled_total 1\n" in "\n".join(
                ["", *server.metric_lines(), ""]
            )
        finally:
            sock.close()
