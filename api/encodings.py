"""Content codings: of request bodies (what a sender may compress) and of the large answers.

Request bodies (`body_middleware`, ahead of the errors middleware, so it sees every answer):

- `Content-Encoding: gzip` or `deflate` (one coding, any case; `identity` or none: as sent;
  `x-gzip` is gzip, as RFC 9110 8.4.1.3 says a recipient SHOULD take it: every bound and check
  below is gzip's) is inflated here (`body_chunks`, `Inflater`) as the body is read, a bounded
  step (`STEP`, 64 KiB) at a time; every bound a route sets on its body (`MAX_BODY`, 10 MiB;
  POST /v1/collect's 64 KiB; a document's 512 KiB) counts the inflated bytes, so a small body
  that inflates past it is refused with 413 once the bound is passed, not inflated whole;
- Persona's servers (`api.protocol.ProblemServer`: the worker's and the readers' runners) are
  built with `auto_decompress=False`: aiohttp's parser inflated these codings itself and never
  checked that a gzip stream ended, so an NDJSON batch cut at a flush point (a client that died
  mid-compress, a proxy that truncated it) was answered 202 with the events before the cut, the
  rest lost. Here a stream that stops before its end, whose trailer (gzip's CRC32 and ISIZE,
  zlib's Adler-32) does not match, or that is followed by anything but another gzip member
  (RFC 1952 2.2) is a 400 problem saying so, and nothing of it is taken. A server that inflates
  itself (aiohttp's default: a plain test server) is detected (`server_inflates`) and its
  inflated body read as it is, so a body is never inflated twice (aiohttp leaves `x-gzip` as
  sent: that one is inflated here whichever server reads it);
- any other coding, several (`gzip, gzip`), or several `Content-Encoding` fields are refused
  with 415 and `Accept-Encoding: gzip, deflate` (RFC 9110 15.5.16) before the body is read,
  but after the key is checked (`coding_middleware`, inside the auth middleware): a client
  without a valid key gets its 401 or 403 whatever its coding, and learns nothing else:
  aiohttp passed an unknown coding's bytes on as they were (read as JSON: a misleading 400,
  or accepted as sent) and refused `br`/`zstd` with a 400 in its parser
  (`api.protocol.ProblemRequestHandler` answers those 415 too);
- an answer given before an encoded body was read to its end (a 413, a 401 before the body was
  looked at), or to a body in a coding not read here, closes the connection, and the rest of
  the body is taken without being parsed (`ProblemRequestHandler.discard_body`): aiohttp read
  it through its parser for up to 10 s after the answer (its lingering close), inflating all
  of it: a 1 MiB gzip body of 1 GiB cost ~2.3 s of CPU after its 413 was sent;
- `read_whole` (the bodies of batch, render, events, the model routes) inflates a 64 KiB step at
  a time: `request.read` inflated in 10 MiB steps, and took ~86 MB to refuse that body;
- a body that does not inflate (corrupt, or not compressed at all) is a 400 problem, where it
  was a 500;
- the encoded bytes are bounded too (the body limit plus gzip's worst-case overhead): a
  chunked body of empty deflate blocks inflates to nothing and was read without end.

Answers (`compressed`): `POST /v1/blocks:batch` and `POST /v1/render` answers of at least
`COMPRESS_FROM` bytes are sent gzipped (level `GZIP_LEVEL`, in a worker thread) when the
request's `Accept-Encoding` accepts gzip (q > 0); smaller ones, and every block GET, are sent as
they are. Both carry `Vary: Accept-Encoding`. benchmarks/batch_compression.py measures it.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Iterator

from aiohttp import hdrs, web

from api.shared import Handler, http_problem, problem

BODY_CODINGS = ("gzip", "deflate")  # what is inflated here (brotli, zstd: not here)
# other names of those codings (RFC 9110 8.4.1.3: x-gzip is gzip); aiohttp's parser knows none
ALIASES = {"x-gzip": "gzip"}
ACCEPTED = ", ".join(BODY_CODINGS)
PLAIN = frozenset({"", "identity"})
COMPRESS_FROM = 64 * 1024  # bytes of an answer from which it is gzipped (when accepted)
# gzip's fastest level: a 6.5 MB 1000-recipient HTML batch to 5.3 % in ~13 ms of CPU, where
# level 6 gets 3.7 % in ~29 ms (benchmarks/batch_compression.py)
GZIP_LEVEL = 1
STEP = 64 * 1024  # the most bytes a body is inflated by at a time
INFLATED = web.RequestKey("body_inflated", int)  # bytes of the body inflated here so far
_SERVER_INFLATES = web.RequestKey("server_inflates", bool)  # `server_inflates`, once known
_READ_TO_END = web.RequestKey("body_read_to_end", bool)  # `body_chunks` took all of it


def refused_coding(request: web.BaseRequest) -> str | None:
    """The request's `Content-Encoding` when its body cannot be read here (module doc), else
    None (no body, no coding, `identity`, or one coding aiohttp inflates)."""
    fields = request.headers.getall(hdrs.CONTENT_ENCODING, [])
    if not fields or not request.body_exists:
        return None
    if len(fields) == 1:
        coding = fields[0].strip().lower()
        if coding in PLAIN or ALIASES.get(coding, coding) in BODY_CODINGS:
            return None
    return ", ".join(fields)


def sent_coding(request: web.BaseRequest) -> str:
    """The request's `Content-Encoding` as sent, lower case ("" without one)."""
    return request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()


def body_coding(request: web.BaseRequest) -> str:
    """The request's `Content-Encoding`, lower case ("" without one), an alias (`x-gzip`) by
    the name of its coding (`gzip`)."""
    coding = sent_coding(request)
    return ALIASES.get(coding, coding)


def encoded(request: web.BaseRequest) -> bool:
    """Whether this request's body is in a coding read here (gzip or deflate)."""
    return body_coding(request) in BODY_CODINGS


def inflated_by_server(request: web.BaseRequest) -> bool:
    """Whether aiohttp's parser inflated this request's body already: its server inflates
    (`server_inflates`) and the coding was sent by a name it knows (not `x-gzip`)."""
    return sent_coding(request) in BODY_CODINGS and server_inflates(request)


def server_inflates(request: web.BaseRequest) -> bool:
    """Whether aiohttp's parser inflated this request's body already: it does unless its server
    was built with `auto_decompress=False`, as every `api.protocol.ProblemServer` is (asked of
    the connection's server while it is open, then kept on the request)."""
    known = request.get(_SERVER_INFLATES)
    if known is None:
        manager = getattr(request.protocol, "_manager", None)
        settings = getattr(manager, "_kwargs", None)
        known = not (isinstance(settings, dict) and settings.get("auto_decompress") is False)
        request[_SERVER_INFLATES] = known
    return known


class UnreadableBody(web.HTTPBadRequest):
    """A body that does not inflate as its `Content-Encoding` says: the 400 problem
    (`api.gate.errors_middleware`) names what is wrong with it."""

    def __init__(self, detail: str) -> None:
        super().__init__(reason="Bad body", text=detail)


NOT_INFLATING = (
    "the body does not inflate as its Content-Encoding says (corrupt, or not compressed)"
)


class Inflater:
    """One body's gzip or deflate stream inflated `STEP` bytes at a time, checked to its end:
    `feed` each piece as it arrives, then `finish`. Raises `UnreadableBody` for a corrupt
    stream, a trailer that does not match, bytes after the end, or (`finish`) no end."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.size = 0  # bytes inflated so far
        self._stream: zlib._Decompress | None = None
        self._members = 0  # gzip members ended so far

    def _start(self, first: int) -> zlib._Decompress:
        if self.coding == "gzip":
            wbits = 16 + zlib.MAX_WBITS
        elif first & 0x0F == 8:  # RFC 1950's CM = 8: zlib-wrapped deflate, as the RFC says
            wbits = zlib.MAX_WBITS
        else:  # raw deflate, as some clients send it (aiohttp took it too)
            wbits = -zlib.MAX_WBITS
        return zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The inflated bytes of `data`, at most `STEP` at a time: a reader that stops taking
        them (its bound is passed) stops the inflating."""
        stream = self._stream
        while True:
            if stream is None or stream.eof:
                if not data:
                    return
                if stream is not None and self.coding != "gzip":
                    raise UnreadableBody(f"bytes follow the end of the body's {self.coding} stream")
                stream = self._stream = self._start(data[0])
            try:
                out = stream.decompress(data, STEP)
            except zlib.error as exc:
                raise UnreadableBody(self._why(exc)) from None
            if stream.eof:
                self._members += 1
                data = stream.unused_data
            else:
                data = stream.unconsumed_tail
            if out:
                self.size += len(out)
                yield out
            # a full step may leave inflated bytes inside zlib with no input left: ask again
            if not data and len(out) < STEP and not stream.eof:
                return

    def finish(self) -> None:
        """Check the stream ended (an empty body is read as empty, as aiohttp read it)."""
        if self._stream is not None and not self._stream.eof:
            raise UnreadableBody(
                f"the body's {self.coding} stream stops before its end (cut short): none of "
                "it is taken"
            )

    def _why(self, exc: zlib.error) -> str:
        reason = str(exc)
        if "incorrect data check" in reason or "incorrect length check" in reason:
            check = "CRC32 or ISIZE trailer" if self.coding == "gzip" else "Adler-32 check"
            return (
                f"the body's {self.coding} stream does not end as it should: its {check} does "
                "not match what it inflates to (corrupt): none of it is taken"
            )
        if self._members and "incorrect header check" in reason:
            return "bytes follow the end of the body's gzip stream that are not a gzip member"
        return NOT_INFLATING


async def _raw_chunks(request: web.BaseRequest) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive (those `request.read` took already, when it did)."""
    if request.content.at_eof():
        whole = await request.read()  # what it read before (a hop's signature check), or b""
        if whole:
            yield whole
        return
    async for chunk in request.content.iter_any():
        yield chunk


async def body_chunks(request: web.BaseRequest) -> AsyncIterator[bytes]:
    """The request body as it arrives, inflated here (a `STEP` at a time, its stream checked to
    its end, `UnreadableBody` else) when it is gzip or deflate and its server does not inflate
    it; a reader that stops taking chunks (its bound is passed) stops the inflating."""
    coding = body_coding(request)
    if coding not in BODY_CODINGS or inflated_by_server(request):
        async for chunk in _raw_chunks(request):
            yield chunk
    else:
        inflater = Inflater(coding)
        request[INFLATED] = 0
        # the encoded bytes are bounded too: no body within the limit inflated takes more than
        # the limit compressed (gzip's worst case adds ~0.03 %); empty deflate blocks would
        # otherwise be read without end, inflating to nothing
        raw_limit = request.client_max_size + (request.client_max_size >> 6) + 4096
        raw = 0
        async for chunk in _raw_chunks(request):
            raw += len(chunk)
            if raw > raw_limit:
                raise web.HTTPRequestEntityTooLarge(max_size=raw_limit, actual_size=raw)
            for out in inflater.feed(chunk):
                request[INFLATED] = inflater.size
                yield out
        inflater.finish()
    request[_READ_TO_END] = True


async def read_whole(request: web.Request) -> bytes:
    """The request body (at most the app's `client_max_size`, `MAX_BODY`; else a 413). An
    encoded one is inflated a step (64 KiB) at a time, counted against that bound, not in the
    10 MiB steps `request.read` sets, which took ~86 MB of memory to refuse a 1 MiB gzip body
    of 1 GiB; one whose stream does not end properly is a 400 (`UnreadableBody`)."""
    if not encoded(request):
        return await request.read()
    limit = request.client_max_size
    body = bytearray()
    async for chunk in body_chunks(request):
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)


def unsupported(detail: str) -> web.Response:
    """The 415 problem for a body in a coding not read here (the connection is closed)."""
    answer = problem(415, "Unsupported Media Type", detail)
    answer.headers[hdrs.ACCEPT_ENCODING] = ACCEPTED
    answer.force_close()
    return answer


@web.middleware
async def body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside the errors middleware: what an answer leaves of an encoded body is not read
    (`_unread_rest`); a coding not read here is refused later, by `coding_middleware`."""
    if encoded(request):
        server_inflates(request)  # asked while the connection is open
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # a refusal raised on the way (a bound passed, say)
        if exc.status < 400 or not encoded(request) or request.get(_READ_TO_END, False):
            raise
        response = http_problem(exc)  # answered here, so that it closes the connection
    _unread_rest(request, response)
    return response


@web.middleware
async def coding_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The 415 for a body in a coding not read here, before the body is read: after the key
    check (api/app.py puts it just inside the auth middleware), so that a client without a
    valid key gets its 401 or 403 and learns nothing of what else is wrong with its request."""
    coding = refused_coding(request)
    if coding is not None:
        return unsupported(
            f"the body's Content-Encoding {coding[:40]!r} is not read here: send it as is, "
            f"or in one of {ACCEPTED}"
        )
    return await handler(request)


def _unread_rest(request: web.Request, response: web.StreamResponse) -> None:
    """When an encoded body was not taken to its end (an answer before it was read, a bound
    passed, a stream that did not inflate), or a body in a coding not read here was answered
    (its 415, a 401 before it), the rest is not read (nor inflated) for the next request's
    sake: the connection closes after `response`."""
    unread = encoded(request) or refused_coding(request) is not None
    if unread and not request.get(_READ_TO_END, False):
        leave_unread(request, response)


def leave_unread(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """The connection closes after `response`, and what is left of the request's body is
    taken without being read."""
    response.force_close()
    # aiohttp would otherwise read the rest through its parser (and, where it inflates
    # bodies itself, inflate it): api.protocol.ProblemRequestHandler
    discard = getattr(request.protocol, "discard_body", None)
    if discard is not None:
        discard(request.content)


def weighted(header: str) -> Iterator[tuple[str, float]]:
    """The items of an `Accept` or `Accept-Encoding` value with their q-values (RFC 9110
    12.4.2): (the item lower-cased, its q: 1 when not given, 0 when not a number)."""
    for item in header.split(","):
        token, *params = item.split(";")
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        yield token.strip().lower(), q


def accepts_gzip(header: str) -> bool:
    """Whether an `Accept-Encoding` value accepts gzip (RFC 9110 12.5.3): `gzip` or `x-gzip`
    with a q-value above 0, or else `*` with one; `gzip;q=0` refuses it. (aiohttp's own
    `enable_compression` looks for the word `gzip` or `deflate` anywhere in it, q=0 or not.)"""
    named: float | None = None
    anything: float | None = None
    for coding, q in weighted(header):
        if coding in ("gzip", "x-gzip"):
            named = q if named is None else max(named, q)
        elif coding == "*":
            anything = q
    chosen = named if named is not None else anything
    return chosen is not None and chosen > 0


async def gzipped(request: web.Request, body: bytes) -> bytes | None:
    """`body` gzipped (in a worker thread: zlib lets go of the GIL) when it is at least
    `COMPRESS_FROM` bytes and the request accepts gzip, else None (sent as it is)."""
    if len(body) < COMPRESS_FROM or not accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, "")):
        return None
    return await asyncio.to_thread(gzip.compress, body, GZIP_LEVEL, mtime=0)


def label(response: web.StreamResponse, packed: bool) -> None:
    """`Vary: Accept-Encoding` on an answer that may be gzipped (whether this one is or not:
    a cache must not give a gzipped one to a client that did not ask for it), and
    `Content-Encoding: gzip` on one that is."""
    vary = response.headers.get(hdrs.VARY)
    if vary is None:
        response.headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
    elif "accept-encoding" not in vary.lower():
        response.headers[hdrs.VARY] = f"{vary}, {hdrs.ACCEPT_ENCODING}"
    if packed:
        response.headers[hdrs.CONTENT_ENCODING] = "gzip"
