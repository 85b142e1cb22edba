"""Content codings: of request bodies (what a sender may compress) and of the large answers.

Request bodies (`body_middleware`, ahead of the errors middleware, so it sees every answer):

- `Content-Encoding: gzip` or `deflate` (one coding, any case; `identity` or none: as sent) is
  inflated by aiohttp's parser as the body is read, a bounded step at a time; every bound a
  route sets on its body (`MAX_BODY`, 10 MiB; POST /v1/collect's 64 KiB; a document's 512 KiB)
  counts the inflated bytes, so a small body that inflates past it is refused with 413 once the
  bound is passed, not inflated whole;
- any other coding, several (`gzip, gzip`), or several `Content-Encoding` fields are refused
  with 415 and `Accept-Encoding: gzip, deflate` (RFC 9110 15.5.16) before the body is read:
  aiohttp passed an unknown coding's bytes on as they were (read as JSON: a misleading 400,
  or accepted as sent) and refused `br`/`zstd` with a 400 in its parser
  (`api.protocol.ProblemRequestHandler` answers those 415 too);
- an answer given before an encoded body was read to its end (a 413, a 401 before the body was
  looked at) closes the connection, and the rest of the body is taken without being parsed
  (`ProblemRequestHandler.discard_body`): aiohttp read it through its parser for up to 10 s
  after the answer (its lingering close), inflating all of it: a 1 MiB gzip body of 1 GiB cost
  ~2.3 s of CPU after its 413 was sent;
- `read_whole` (the bodies of batch, render, events, the model routes) inflates a 64 KiB step at
  a time: `request.read` inflates in 10 MiB steps, and took ~86 MB to refuse that body;
- a body that does not inflate (corrupt, or not compressed at all) is a 400 problem
  (`errors_middleware`), where it was a 500.

Answers (`compressed`): `POST /v1/blocks:batch` and `POST /v1/render` answers of at least
`COMPRESS_FROM` bytes are sent gzipped (level `GZIP_LEVEL`, in a worker thread) when the
request's `Accept-Encoding` accepts gzip (q > 0); smaller ones, and every block GET, are sent as
they are. Both carry `Vary: Accept-Encoding`. benchmarks/batch_compression.py measures it.
"""

from __future__ import annotations

import asyncio
import gzip

from aiohttp import hdrs, web

from api.shared import Handler, problem

BODY_CODINGS = ("gzip", "deflate")  # what aiohttp's parser inflates (brotli, zstd: not here)
ACCEPTED = ", ".join(BODY_CODINGS)
PLAIN = frozenset({"", "identity"})
COMPRESS_FROM = 64 * 1024  # bytes of an answer from which it is gzipped (when accepted)
# gzip's fastest level: a 6.5 MB 1000-recipient HTML batch to 5.3 % in ~13 ms of CPU, where
# level 6 gets 3.7 % in ~29 ms (benchmarks/batch_compression.py)
GZIP_LEVEL = 1


def refused_coding(request: web.BaseRequest) -> str | None:
    """The request's `Content-Encoding` when its body cannot be read here (module doc), else
    None (no body, no coding, `identity`, or one coding aiohttp inflates)."""
    fields = request.headers.getall(hdrs.CONTENT_ENCODING, [])
    if not fields or not request.body_exists:
        return None
    if len(fields) == 1:
        coding = fields[0].strip().lower()
        if coding in PLAIN or coding in BODY_CODINGS:
            return None
    return ", ".join(fields)


def encoded(request: web.BaseRequest) -> bool:
    """Whether aiohttp inflates this request's body (one coding it knows)."""
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    return coding in BODY_CODINGS


async def read_whole(request: web.Request) -> bytes:
    """The request body (at most the app's `client_max_size`, `MAX_BODY`; else aiohttp's 413).
    An encoded one is inflated a parser step (64 KiB) at a time, not in the 10 MiB steps
    `request.read` sets, which took ~86 MB of memory to refuse a 1 MiB gzip body of 1 GiB."""
    if not encoded(request):
        return await request.read()
    limit = request.client_max_size
    body = bytearray()
    async for chunk in request.content.iter_any():
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
    coding = refused_coding(request)
    if coding is not None:
        return unsupported(
            f"the body's Content-Encoding {coding[:40]!r} is not read here: send it as is, "
            f"or in one of {ACCEPTED}"
        )
    response = await handler(request)
    if encoded(request) and not request.content.is_eof():
        response.force_close()
        # aiohttp would otherwise inflate the rest of it (api.protocol.ProblemRequestHandler)
        discard = getattr(request.protocol, "discard_body", None)
        if discard is not None:
            discard()
    return response


def accepts_gzip(header: str) -> bool:
    """Whether an `Accept-Encoding` value accepts gzip (RFC 9110 12.5.3): `gzip` or `x-gzip`
    with a q-value above 0, or else `*` with one; `gzip;q=0` refuses it. (aiohttp's own
    `enable_compression` looks for the word `gzip` or `deflate` anywhere in it, q=0 or not.)"""
    named: float | None = None
    anything: float | None = None
    for item in header.split(","):
        coding, *params = item.split(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
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
