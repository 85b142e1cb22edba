"""Request bodies with a `Content-Encoding`, as senders' HTTP clients send them, on every route
that takes a body (found in /openapi.json, as tests/api/test_deep_bodies.py finds them):

- gzip and deflate (zlib-wrapped or raw) are read, inflated; `x-gzip` is read as gzip (RFC 9110
  8.4.1.3: a recipient SHOULD take it as gzip), where it was a 415;
- a coding not read here (`br`, `zstd`, an unknown one, `gzip, gzip`, two fields) is a 415
  problem naming the codings that are, before the body is read: aiohttp refused `br`/`zstd` with
  a 400, and passed the others' bytes on as they were (an unknown coding's body was accepted);
  a client without a valid key gets its 401 or 403 first (it was the 415);
- a body that does not inflate (corrupt, or not compressed) is a 400 problem, where it was 500;
- a small body that inflates past the route's bound is a 413 problem, and what the answer left
  unread is not inflated afterwards: aiohttp read (and inflated) the rest of a 1 MiB body of
  1 GiB for its lingering close, ~2.3 s of the event loop's CPU per request.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api.encodings import INFLATED, body_middleware, read_whole
from api.gate import errors_middleware
from api.hot import HotRunner
from api.limits import THROTTLE
from api.protocol import ProblemRunner
from tests.api.test_deep_bodies import _routes
from tests.api.test_protocol import _serving as serving
from tests.api.test_schemathesis import HEADERS, Server

EVENTS = [{"event_id": "enc-1", "type": "page_view", "user_id": "u1", "ts": 1_700_000_000_000}]
GOOD = {
    "/v1/events": EVENTS,
    "/v1/collect": EVENTS,
    "/v1/blocks:batch": {"block": "recommendations", "format": "json", "user_ids": ["u1"]},
    "/v1/render": {"template": "hi {{ user.user_id }}", "user_ids": ["u1"]},
    "/v1/rules": {"rules": []},
    "/v1/experiments": {"experiments": []},
}
GIB = 1 << 30


def bomb(size: int = GIB) -> bytes:
    """A gzip body of ~1/1000 of `size` that inflates to `size` bytes: `[` and spaces."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    parts = [packer.compress(b"[")]
    parts += [packer.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + packer.flush()


_KEYED = object()  # `send`'s default authorization: the test key (HEADERS)


def send(
    server: Server,
    method: str,
    path: str,
    body: bytes,
    *codings: str,
    authorization: str | object | None = _KEYED,
) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one request with `codings` as its Content-Encoding fields,
    sent with the test key, or with `authorization` (none when None)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.putrequest(method, path)
    connection.putheader("Content-Type", "application/json")
    key = HEADERS["Authorization"] if authorization is _KEYED else authorization
    if isinstance(key, str):
        connection.putheader("Authorization", key)
    for coding in codings:
        connection.putheader("Content-Encoding", coding)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    answer = connection.getresponse()
    try:
        return answer.status, answer.headers, answer.read()
    finally:
        connection.close()


def is_problem(headers: Any, body: bytes, status: int) -> bool:
    if not headers.get("Content-Type", "").startswith("application/problem+json"):
        return False
    return json.loads(body).get("status") == status


def test_gzip_and_deflate_bodies_are_read_on_the_routes_that_take_json(
    api_server: Server,
) -> None:
    wrong = []
    for path, document in GOOD.items():
        method = "PUT" if path in ("/v1/rules", "/v1/experiments") else "POST"
        raw = json.dumps(document).encode()
        for coding, body in (
            ("gzip", gzip.compress(raw)),
            ("GZIP", gzip.compress(raw)),
            ("x-gzip", gzip.compress(raw)),
            ("X-GZIP", gzip.compress(raw)),
            ("deflate", zlib.compress(raw)),
            ("deflate", zlib.compress(raw)[2:-4]),  # raw deflate, as some clients send it
            ("identity", raw),
        ):
            status, _, answer = send(api_server, method, path, body, coding)
            if status not in (200, 202):
                wrong.append((path, coding, status, answer[:120]))
    assert wrong == []


REFUSED = {
    "br": (b"\x0b\x02\x80[]\x03", ("br",)),
    "zstd": (b"(\xb5/\xfd\x00X\x11\x00\x00[]", ("zstd",)),
    "unknown": (b"[]", ("x-foo",)),
    "stacked": (gzip.compress(gzip.compress(b"[]")), ("gzip, gzip",)),
    "two fields": (gzip.compress(gzip.compress(b"[]")), ("gzip", "gzip")),
    "x-gzip stacked": (gzip.compress(gzip.compress(b"[]")), ("x-gzip, gzip",)),
    "x-deflate": (zlib.compress(b"[]"), ("x-deflate",)),  # no such alias in RFC 9110
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_coding_not_read_here_is_a_415_problem_on_every_body_route(
    api_server: Server, kind: str
) -> None:
    body, codings = REFUSED[kind]
    wrong = []
    for method, path in _routes(api_server):
        status, headers, answer = send(api_server, method, path, body, *codings)
        accepted = headers.get("Accept-Encoding", "")
        if not (is_problem(headers, answer, 415) and "gzip" in accepted):
            wrong.append((method, path, status, accepted, answer[:100]))
    assert wrong == []


UNREADABLE = {
    "corrupt gzip": (b"\x1f\x8b\x08\x00garbage, not deflate data", "gzip"),
    "not compressed": (b'{"rules": []}', "gzip"),
    "corrupt deflate": (b"x\x9c\xff\xff garbage", "deflate"),
}


@pytest.mark.parametrize("kind", list(UNREADABLE))
def test_a_body_that_does_not_inflate_is_a_400_problem_on_every_body_route(
    api_server: Server, kind: str
) -> None:
    body, coding = UNREADABLE[kind]
    wrong = []
    for method, path in _routes(api_server):
        status, headers, answer = send(api_server, method, path, body, coding)
        # a route that refuses before reading (no model named `x`) may say so
        if not (is_problem(headers, answer, status) and status in (400, 404)):
            wrong.append((method, path, status, answer[:100]))
    assert wrong == []


def test_a_body_inflating_past_the_bound_is_a_413_problem_on_every_body_route(
    api_server: Server,
) -> None:
    body = bomb(64 << 20)  # 64 MiB inflated: past every route's bound
    wrong = []
    for method, path in _routes(api_server):
        status, headers, answer = send(api_server, method, path, body, "gzip")
        # a route that refuses before reading (no such model, no such version) may say so
        if not (is_problem(headers, answer, status) and status in (404, 413)):
            wrong.append((method, path, status, answer[:100]))
        elif status == 413 and headers.get("Connection", "").lower() != "close":
            wrong.append((method, path, "kept the connection"))
    assert wrong == []


def test_the_document_lists_the_415_on_every_body_route() -> None:
    from api.openapi import openapi_document

    missing = [
        (method, path)
        for path, operations in openapi_document()["paths"].items()
        for method, operation in operations.items()
        if method in ("post", "put", "patch") and "415" not in operation["responses"]
    ]
    assert missing == []


def test_the_server_still_answers(api_server: Server) -> None:
    status, _, _ = send(api_server, "POST", "/v1/events", gzip.compress(b"[]"), "gzip")
    assert status == 202


# What is inflated after the answer: a bare app with the API's body middleware, served as the
# worker and the readers serve (`ProblemRunner`, `HotRunner`).
READERS: list[Any] = []


async def _events(request: web.Request) -> web.Response:
    READERS.append(request)
    await read_whole(request)
    return web.json_response({})


async def _echo(request: web.Request) -> web.Response:
    return web.Response(body=await read_whole(request))


@asynccontextmanager
async def _serving(kind: str) -> AsyncIterator[int]:
    app = web.Application(client_max_size=10 << 20)
    app.middlewares.extend([body_middleware, errors_middleware])
    app.router.add_post("/v1/events", _events)
    app.router.add_post("/echo", _echo)
    runners = {
        "problem": lambda: ProblemRunner(app),
        "hot": lambda: HotRunner(app, access_log=None),
        "problem told to inflate": lambda: ProblemRunner(app, auto_decompress=True),
        "plain": lambda: web.AppRunner(app),  # aiohttp inflates (a plain test server)
        "plain, not inflating": lambda: web.AppRunner(app, auto_decompress=False),
    }
    async with serving(runners[kind]()) as port:
        yield port


@pytest.mark.parametrize("kind", ["problem", "hot"])
async def test_what_a_413_leaves_unread_is_not_inflated(kind: str) -> None:
    READERS.clear()
    body = bomb()
    async with _serving(kind) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        writer.write_eof()  # the whole body is sent: the server reads to the end or closes
        answer = await asyncio.wait_for(reader.read(), 30)  # to the server's close
        writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"application/problem+json" in answer
    request = READERS[0]
    assert request.content.total_bytes <= len(body)  # aiohttp's parser inflates nothing
    assert request[INFLATED] < 12 << 20  # the 10 MiB bound and a step, not the 1 GiB


# Streams that do not end as their coding says: aiohttp's parser inflated a gzip body without
# checking that its stream ended (no end-of-stream marker: cut at a flush point) or what follows
# it (a CRC32/ISIZE trailer that does not match, bytes after the member), so an NDJSON batch cut
# short was answered 202 with the events before the cut and the rest was lost.


def _flushed(coding: str, before: bytes, after: bytes, mode: int) -> bytes:
    """`before`, flushed with `mode`, then `after`, flushed again: a stream with no end."""
    wbits = {"gzip": 31, "deflate": 15, "raw deflate": -15}[coding]
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return (
        packer.compress(before)
        + packer.flush(mode)
        + packer.compress(after)
        + packer.flush(zlib.Z_SYNC_FLUSH)
    )


def _retrailed(raw: bytes, crc: int = 0, size: int = 0) -> bytes:
    """`raw` gzipped, its CRC32 and ISIZE trailer fields changed by `crc` and `size`."""
    packed = gzip.compress(raw, mtime=0)
    good_crc = int.from_bytes(packed[-8:-4], "little")
    good_size = int.from_bytes(packed[-4:], "little")
    trailer = ((good_crc ^ crc).to_bytes(4, "little")) + (
        ((good_size + size) & 0xFFFFFFFF).to_bytes(4, "little")
    )
    return packed[:-8] + trailer


BROKEN_STREAMS = {
    "gzip cut at a sync flush": lambda a, b: ("gzip", _flushed("gzip", a, b, zlib.Z_SYNC_FLUSH)),
    "gzip cut at a full flush": lambda a, b: ("gzip", _flushed("gzip", a, b, zlib.Z_FULL_FLUSH)),
    "gzip cut in its trailer": lambda a, b: ("gzip", gzip.compress(a + b)[:-3]),
    "gzip with a wrong CRC32": lambda a, b: ("gzip", _retrailed(a + b, crc=1)),
    "gzip with a wrong ISIZE": lambda a, b: ("gzip", _retrailed(a + b, size=1)),
    "gzip with bytes after it": lambda a, b: ("gzip", gzip.compress(a + b) + b"garbage"),
    "gzip with zeros after it": lambda a, b: ("gzip", gzip.compress(a + b) + bytes(8)),
    "deflate cut at a sync flush": lambda a, b: (
        "deflate",
        _flushed("deflate", a, b, zlib.Z_SYNC_FLUSH),
    ),
    "raw deflate cut at a full flush": lambda a, b: (
        "deflate",
        _flushed("raw deflate", a, b, zlib.Z_FULL_FLUSH),
    ),
    "deflate with bytes after it": lambda a, b: ("deflate", zlib.compress(a + b) + b"garbage"),
}


def _halves(path: str, tag: str) -> tuple[bytes, bytes]:
    """A body for `path` in two parts, the first of them a whole document on its own: two NDJSON
    events for the event routes (ids carrying `tag`), else the document and some spaces."""
    if path in ("/v1/events", "/v1/collect"):
        first, second = (
            json.dumps({**EVENTS[0], "event_id": f"{tag}-{n}"}).encode() + b"\n" for n in (1, 2)
        )
        return first, second
    return json.dumps(GOOD[path]).encode() + b"\n", b" " * 64 + b"\n"


@pytest.mark.parametrize("kind", list(BROKEN_STREAMS))
def test_a_body_whose_stream_does_not_end_properly_is_a_400_problem_and_nothing_is_accepted(
    api_server: Server, kind: str
) -> None:
    wrong = []
    tag = "broken-" + kind.replace(" ", "-")
    for path in GOOD:
        method = "PUT" if path in ("/v1/rules", "/v1/experiments") else "POST"
        coding, body = BROKEN_STREAMS[kind](*_halves(path, tag))
        status, headers, answer = send(api_server, method, path, body, coding)
        if not is_problem(headers, answer, 400):
            wrong.append((path, status, answer[:120]))
        elif "end" not in json.loads(answer)["detail"]:
            wrong.append((path, "detail", json.loads(answer)["detail"]))
    produced = [e.event_id for e in api_server.state.produced if e.event_id.startswith(tag)]
    assert wrong == []
    assert produced == []


def test_a_gzip_body_of_several_members_is_read_whole(api_server: Server) -> None:
    """RFC 1952 2.2: a gzip body is a series of members (`cat a.gz b.gz`); aiohttp read the first
    and dropped the rest."""
    first, second = _halves("/v1/events", "members")
    body = gzip.compress(first) + gzip.compress(second)
    status, _, answer = send(api_server, "POST", "/v1/events", body, "gzip")
    assert (status, json.loads(answer)["accepted"]) == (202, 2)


def test_a_chunked_gzip_body_inflates_across_its_chunks(api_server: Server) -> None:
    lines = [
        json.dumps({**EVENTS[0], "event_id": f"chunked-{n}", "props": {"pad": "x" * 900}})
        for n in range(500)
    ]
    body = gzip.compress("\n".join(lines).encode())
    connection = http.client.HTTPConnection("127.0.0.1", api_server.port, timeout=60)
    headers = {**HEADERS, "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))
    connection.request("POST", "/v1/events", pieces, headers, encode_chunked=True)
    answer = connection.getresponse()
    assert (answer.status, json.loads(answer.read())["accepted"]) == (202, 500)
    connection.close()


@pytest.mark.parametrize(
    "kind", ["problem", "hot", "problem told to inflate", "plain", "plain, not inflating"]
)
async def test_a_body_is_inflated_once_whichever_server_reads_it(kind: str) -> None:
    """Persona's servers leave bodies to the readers, a plain aiohttp server inflates them
    itself: either way the handler gets the body inflated once."""
    raw = b'{"x": "' + b"y" * 200_000 + b'"}'
    async with _serving(kind) as port, aiohttp.ClientSession() as session:
        for coding, body in (
            ("gzip", gzip.compress(raw)),
            ("x-gzip", gzip.compress(raw)),  # aiohttp's own parser leaves x-gzip as it is
            ("deflate", zlib.compress(raw)),
        ):
            headers = {"Content-Encoding": coding}
            url = f"http://127.0.0.1:{port}/echo"
            async with session.post(url, data=body, headers=headers) as answer:
                assert (answer.status, await answer.read()) == (200, raw)


@pytest.mark.parametrize("kind", ["problem", "hot", "problem told to inflate"])
async def test_persona_servers_refuse_a_cut_gzip_body_whatever_they_are_given(kind: str) -> None:
    cut = _flushed("gzip", b'{"x": 1}\n', b"\n", zlib.Z_SYNC_FLUSH)
    async with _serving(kind) as port, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/echo"
        async with session.post(url, data=cut, headers={"Content-Encoding": "gzip"}) as answer:
            assert answer.status == 400
            assert "before its end" in (await answer.json())["detail"]


def test_encoded_bytes_that_inflate_to_nothing_are_bounded_too(api_server: Server) -> None:
    """A chunked gzip body of empty deflate blocks (5 bytes each, inflating to nothing) passed
    every bound, which counted inflated bytes: read without end. Its encoded bytes are bounded
    by the body limit too (a 413, the connection closed)."""
    empty = b"\x00\x00\x00\xff\xff"  # a non-final stored block of length 0
    assert (
        zlib.decompressobj(31).decompress(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + empty)
        == b""
    )

    def body() -> Any:
        yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # a gzip header
        chunk = empty * (1 << 16)  # 320 KiB of empty blocks
        for _ in range(48):  # ~15 MiB, past the 10 MiB body limit
            yield chunk

    for method, path in (
        ("POST", "/v1/events"),
        ("POST", "/v1/blocks:batch"),
        ("PUT", "/v1/rules"),
    ):
        connection = http.client.HTTPConnection("127.0.0.1", api_server.port, timeout=60)
        try:
            connection.putrequest(method, path)
            for name, value in {**HEADERS, "Content-Type": "application/json"}.items():
                connection.putheader(name, value)
            connection.putheader("Content-Encoding", "gzip")
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            try:
                for part in body():
                    connection.send(b"%x\r\n%s\r\n" % (len(part), part))
                connection.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the end: the answer tells
            answer = connection.getresponse()
            assert is_problem(answer.headers, answer.read(), 413), (path, answer.status)
        finally:
            connection.close()


ROUTES_X = (("PUT", "/v1/rules"),)


def test_an_x_gzip_body_is_read_as_gzip_with_its_bounds_and_checks(api_server: Server) -> None:
    """x-gzip is gzip (RFC 9110 8.4.1.3): its stream is checked to its end and its inflated
    bytes count against the route's bound, as gzip's are."""
    first, second = _halves("/v1/events", "x-gzip")
    status, _, answer = send(
        api_server, "POST", "/v1/events", gzip.compress(first + second), "x-gzip"
    )
    assert (status, json.loads(answer)["accepted"]) == (202, 2)
    cut = _flushed("gzip", first, second, zlib.Z_SYNC_FLUSH)
    status, headers, answer = send(api_server, "POST", "/v1/events", cut, "x-gzip")
    assert is_problem(headers, answer, 400) and "before its end" in json.loads(answer)["detail"]
    status, headers, answer = send(api_server, "POST", "/v1/collect", bomb(1 << 20), "X-Gzip")
    assert is_problem(headers, answer, 413)


# A client without a valid key learns nothing of a body coding: its 401 (or its key's 403)
# comes first, where a coding not read here was a 415 before the key was looked at.
FEEDS_ONLY = "feeds-only-secret-kkkkkkk"  # a key whose scope no body route takes
WRONG_KEYS = {
    "no key": None,
    "a key not known": "Bearer not-a-key-of-this-process-kkkk",
    "a key lacking the scope": f"Bearer {FEEDS_ONLY}",
}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.api.test_schemathesis import KEYS

    started = Server(tmp_path_factory.mktemp("keyed"), f"{KEYS};feeds:{FEEDS_ONLY}:feeds:read")
    started.start()
    yield started
    started.stop()


def _send_as(
    server: Server, authorization: str | None, method: str, path: str, body: bytes, coding: str
) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one request sent with `authorization` (none when None)."""
    return send(server, method, path, body, coding, authorization=authorization)


@pytest.mark.parametrize("coding", ["x-foo", "br", "gzip, gzip"])
def test_a_client_without_a_valid_key_gets_its_401_or_403_before_a_415(
    keyed_server: Server, coding: str
) -> None:
    keyed_server.app[THROTTLE].buckets.clear()  # its failed authentications start afresh
    wrong = []
    for method, path in _routes(keyed_server):
        for kind, authorization in WRONG_KEYS.items():
            status = 403 if authorization == f"Bearer {FEEDS_ONLY}" else 401
            got, headers, answer = _send_as(
                keyed_server, authorization, method, path, b"[]", coding
            )
            if not is_problem(headers, answer, status) or "Accept-Encoding" in headers:
                wrong.append((method, path, kind, got, answer[:100]))
    assert wrong == []


def test_an_unauthenticated_body_in_a_coding_not_read_here_is_not_read(
    keyed_server: Server,
) -> None:
    """Past the body bound, a client without a key still gets its 401 (the key is looked at
    before any of the body is), and the connection is closed: the rest of a body nobody will
    read is not taken for it (aiohttp's lingering close read it up to 10 s)."""
    keyed_server.app[THROTTLE].buckets.clear()
    body = b"[" + b" " * (12 << 20) + b"]"  # past the 10 MiB bound
    _, headers, answer = _send_as(keyed_server, None, "POST", "/v1/events", body, "x-foo")
    assert is_problem(headers, answer, 401)
    assert headers.get("Connection", "").lower() == "close"


def test_a_valid_key_with_a_coding_not_read_here_still_gets_the_415(api_server: Server) -> None:
    _, headers, answer = send(api_server, "POST", "/v1/events", b"[]", "x-foo")
    assert is_problem(headers, answer, 415) and "gzip" in headers["Accept-Encoding"]
