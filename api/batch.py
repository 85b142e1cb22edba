"""`POST /v1/blocks:batch`: one block for up to 1000 users in one call.

Request (JSON, or msgpack with `Content-Type: application/msgpack`):
`{"block": "recommendations", "format": "html" | "json", "user_ids": ["u1", ...]}`.
Response: `{"results": {user_id: {"content": str, "fallback": bool, "etag": str}}}` as JSON, or as
msgpack when the `Accept` header names `application/msgpack` with a q-value above 0 and at least
JSON's (`prefers_msgpack`); a fallback entry also has
`fallback_reason` (engine.blocks.REASONS, docs/serving.md). `content` is the block exactly as
`GET /v1/users/{id}/blocks/{block}` serves it (the HTML fragment, or the JSON document as text).
Duplicate user ids are answered once. Every user gets an answer: personalized or the fallback.
A user id is 1..128 characters with no control character and no lone surrogate (engine/text.py
`id_problem`: what no id may hold); a list with any other is a 400 naming each bad one's
index (api/bodies.py `recipient_ids`).

Block parameters (engine.params) are fields of the same object, for every user of the batch:
`n`, `category`, `brand`, `min_price`, `max_price` (numbers), `exclude` (an array of item ids, or
them comma-separated), `context_item`, `locale`; `similar_items` needs `context_item`. Any other
field, or a bad value, is a 400 problem naming it in `parameter`.

`deadline_ms` (optional, an integer 1..10000; anything else a 400 naming it): the answer is sent
about that many milliseconds after the body was read. No chunk is started that would end past
the deadline (were it to take as long as the one before): the users left (the last ones of the
de-duplicated `user_ids`) get the fallback an unknown user gets
(`ContentService.stranger_blocks`: rendered once for them all, no profile read, no exposure
logged), the same entry shape (`"fallback": true`, `"fallback_reason": "deadline"`), and the
answer says how many in `X-Persona-Deadline-Fallbacks` (sent whenever `deadline_ms` is; counted in
persona_http_batch_deadline_fallbacks_total).

Whatever `deadline_ms` says, a batch stops computing once `TIMEOUT_SHARE` of the request
timeout (`PERSONA_REQUEST_TIMEOUT`, 10 s: 6 s) has passed since its body was read, as
api/render.py stops rendering at the same share: the users left get the same fallback and the
header says how many (it is sent whenever `deadline_ms` is, or some users were cut). Without
it a batch slowed down by load (an ESP's concurrent 1000-user batches on busy cores) computed
on until the timeout answered 503 and threw away every block it had made, and the sender
retried the whole batch into the same load.

The blocks are computed in slices on the event loop: `CHUNK_USERS` users at a time (one
`ContentService.blocks` call: the stamp's shared part taken once for them), yielding to the loop
whenever `SLICE_SECONDS` have passed since the last yield, so a batch of uncached users (~0.5 ms
each) does not hold up the process's other requests (block GETs at send time, /healthz) for
the whole batch. Exposures are logged per chunk, right after its blocks. The answer is the same
as computed in one go.

With several workers in a group, the users whose partition another worker owns are asked of
that worker (one signed sub-request per owner, within the deadline) while this process computes
its own, and the answers are merged in the request's order (api/fanout.py); an owner that fails
has its users answered here. A forwarded request is answered here whole.

A client that goes away (its connection closed: an ESP's own timeout) stops the batch at the
next yield (`client_gone`): `persona` serves without aiohttp's handler cancellation, so the rest
of the batch was computed, and its exposures logged, for nobody. Nothing is sent; the access
log and the request metrics say 499 (nginx's "client closed request"), and a line at info says
how far the batch got. api/render.py does the same between recipients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgpack
from aiohttp import payload, web
from aiohttp.abc import AbstractStreamWriter

from api import fanout
from api.bodies import BODY as BODY  # re-exported
from api.bodies import MSGPACK, BadRequest, read_body, recipient_ids
from api.encodings import gzipped, label, weighted
from api.limits import MAX_USERS, OPTIONS, ServingOptions, shape_check
from api.models_routes import log_exposures
from api.observability import TELEMETRY
from api.shared import CONTENT
from engine.blocks import ALL_BLOCKS, CONTEXT_BLOCKS, FORMATS, Block
from engine.fanout import merge
from engine.params import BlockParams, InvalidParam, from_body

BATCH_FIELDS = ("block", "format", "user_ids", "deadline_ms")  # the rest: block parameters
CHUNK_USERS = 8  # users whose blocks are computed in one call (~4 ms when none is cached)
SLICE_SECONDS = 0.004  # a batch computes this long at most (plus one chunk) between yields
MAX_DEADLINE_MS = 10_000
# of the request timeout: when a batch stops computing, leaving the rest (the fallback for the
# users left, encoding, gzip in a thread) time to finish before the timeout's 503; as render's
# REQUEST_TIME_SHARE (engine/sandbox.py)
TIMEOUT_SHARE = 0.6
DEADLINE_HEADER = "X-Persona-Deadline-Fallbacks"
log = logging.getLogger("persona.api")
clock: Callable[[], float] = time.perf_counter  # seconds: slices and deadlines (tests replace it)


def deadline_ms(body: dict[str, Any]) -> int | None:
    """The body's `deadline_ms` (None without one); BadRequest naming it unless an integer
    1..MAX_DEADLINE_MS (not a boolean, a string or a float)."""
    if "deadline_ms" not in body:
        return None
    value = body["deadline_ms"]
    if type(value) is not int or not 1 <= value <= MAX_DEADLINE_MS:
        raise BadRequest.of(
            InvalidParam("deadline_ms", f"must be an integer 1..{MAX_DEADLINE_MS} (milliseconds)")
        )
    return value


def parse(body: Any) -> tuple[str, str, list[str], BlockParams]:
    if not isinstance(body, dict):
        raise BadRequest("the body is an object with block, format and user_ids")
    # the fields first: a misspelled one of the route's own (`blocks`) is named with the one
    # meant, where it was answered as if that one were missing ("block is one of ...")
    params = block_params(body, BATCH_FIELDS)
    block = body.get("block")
    fmt = body.get("format", "html")
    if block not in ALL_BLOCKS:
        raise BadRequest(f"block is one of {', '.join(ALL_BLOCKS)}")
    if fmt not in FORMATS:
        raise BadRequest(f"format is one of {', '.join(FORMATS)}", "format")
    if block in CONTEXT_BLOCKS and params.context_item is None:
        raise BadRequest.of(InvalidParam("context_item", f"{block} needs one"))
    return str(block), str(fmt), recipient_ids(body, MAX_USERS), params


def recipients(body: Any) -> list[str]:
    """The body's distinct user ids, by the checks the handler makes (`parse`, `deadline_ms`):
    the rate limit charges them, or leaves a body refused here to the handler's 400."""
    ids = parse(body)[2]
    deadline_ms(body)
    return ids


shape_check("/v1/blocks:batch", recipients)


def block_params(body: dict[str, Any], own: tuple[str, ...]) -> BlockParams:
    """The block parameters among `body`'s fields (`own`: the route's); BadRequest names a
    bad one."""
    try:
        return from_body(body, own)
    except InvalidParam as exc:
        raise BadRequest.of(exc) from None


MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack"})


def wants_msgpack(request: web.Request) -> bool:
    """Whether a batch's (a render's) answer is msgpack, by the request's `Accept`
    (`prefers_msgpack`)."""
    return prefers_msgpack(request.headers.get("Accept", ""))


def prefers_msgpack(accept: str) -> bool:
    """Whether an `Accept` value asks for msgpack (RFC 9110 12.5.1): `application/msgpack` (or
    `application/x-msgpack`) named with a q-value above 0 and at least that of JSON
    (`application/json`, else `application/*`, else `*/*`; equal: msgpack). Anything else is
    answered JSON, never 406: `;q=0` refuses msgpack, a q that is no number counts as 0, and
    only the exact type names count (the text `application/msgpack` anywhere in the header
    chose msgpack, refused or less preferred than JSON)."""
    packed: float | None = None
    plain: dict[str, float] = {}  # application/json, application/*, */* -> its q
    for media, q in weighted(accept):
        if media in MSGPACK_TYPES:
            packed = q if packed is None else max(packed, q)
        elif media in ("application/json", "application/*", "*/*"):
            plain[media] = max(q, plain.get(media, q))
    if packed is None or not packed > 0:  # `not >`: a NaN q refuses it too
        return False
    json_q = next(
        (plain[m] for m in ("application/json", "application/*", "*/*") if m in plain), 0.0
    )
    return packed >= json_q


def respond(request: web.Request, payload: dict[str, Any]) -> web.Response:
    if wants_msgpack(request):
        return web.Response(body=msgpack.packb(payload, use_bin_type=True), content_type=MSGPACK)
    return web.Response(
        text=json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
        content_type="application/json",
    )


class Entry(Protocol):
    """What a batch answer is written from: a `Block`, or an owner's entry (api/fanout.py)."""

    @property
    def entry_json(self) -> str: ...

    @property
    def entry_msgpack(self) -> bytes: ...


def encode_results(user_ids: list[str], blocks: Sequence[Entry], as_msgpack: bool) -> bytes:
    """`{"results": {user_id: entry}}` from the blocks' pre-encoded entries (a cached block is
    encoded once, not once per batch it is sent in): the same bytes `respond` would write."""
    if as_msgpack:
        packer = msgpack.Packer(use_bin_type=True)
        parts = [b"\x81", packer.pack("results"), packer.pack_map_header(len(blocks))]
        for user_id, block in zip(user_ids, blocks, strict=True):
            parts.append(packer.pack(user_id))
            parts.append(block.entry_msgpack)
        return b"".join(parts)
    dumps = json.dumps
    inner = ",".join(
        f"{dumps(user_id, ensure_ascii=False)}:{block.entry_json}"
        for user_id, block in zip(user_ids, blocks, strict=True)
    )
    return ('{"results":{' + inner + "}}").encode()


WRITE_CHUNK = 256 * 1024  # bytes of a batch response handed to the socket at a time


class SlicedBody(payload.Payload):
    """A response body written to the connection in `WRITE_CHUNK` slices of one buffer.

    As plain bytes, aiohttp (on Python < 3.12.9) joins the headers and the whole body into a new
    buffer, asyncio copies what the socket did not take at once and then buffers that again: a
    1000-block batch is ~4.4 MB, copied three times over. Slices of a memoryview go to the socket
    as they are (only the first one is joined with the headers), and aiohttp waits for the
    socket to drain between them."""

    def __init__(self, value: bytes, content_type: str) -> None:
        super().__init__(value, content_type=content_type)
        self._size = len(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        view = memoryview(self._value)
        for start in range(0, len(view), WRITE_CHUNK):
            await writer.write(view[start : start + WRITE_CHUNK])


CLIENT_GONE = 499  # the status a request abandoned by its client is logged and counted with


class ClientGone(Exception):
    """The client of a batch or render closed its connection before the answer was ready,
    after `done` recipients were computed."""

    def __init__(self, done: int) -> None:
        super().__init__(f"the client went away after {done} recipients")
        self.done = done


def client_gone(request: web.Request) -> bool:
    """Whether `request`'s connection is closed or closing (its client went away)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def abandoned(request: web.Request, done: int, total: int) -> web.Response:
    """What a handler returns for a client that went away after `done` of `total` recipients:
    a 499 no one reads (aiohttp drops it), logged and counted as such."""
    log.info(
        "%s %s: the client went away; stopped after %d of %d users",
        request.method,
        request.path,
        done,
        total,
    )
    return web.Response(status=CLIENT_GONE, reason="Client Closed Request")


async def between_slices() -> None:
    """Where a batch lets the event loop answer the process's other requests.

    Twice: after one `sleep(0)` the batch is first in the loop's next round, before the I/O and
    the timers that round polls (a block GET that arrived during the slice); the second puts it
    behind them, so what waited is served before the next slice, not after it."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def sliced_blocks(
    request: web.Request,
    ids: list[str],
    block_name: str,
    fmt: str,
    params: BlockParams,
    deadline: float | None = None,
) -> list[Block]:
    """`ContentService.blocks` for `ids` (and their exposures logged), `CHUNK_USERS` at a time,
    yielding to the event loop (`between_slices`) once `SLICE_SECONDS` have passed since the
    last yield: the same blocks, in the same order, as one call would answer (ClientGone when
    the client went away meanwhile: checked after each yield). With `deadline`
    (a `clock()` time), no chunk starts that would end past it, were it to take as long as the
    last one did: the blocks of the first ids only."""
    content = request.app[CONTENT]
    blocks: list[Block] = []
    since = clock()
    took = 0.0  # how long the last chunk took (with a deadline)
    for start in range(0, len(ids), CHUNK_USERS):
        if start and clock() - since >= SLICE_SECONDS:
            await between_slices()
            since = clock()
            if client_gone(request):
                raise ClientGone(len(blocks))
        if deadline is not None:
            now = clock()
            if now + took >= deadline:  # this chunk would likely end past it
                break  # the users left: the caller's fallbacks
        chunk = ids[start : start + CHUNK_USERS]
        blocks += content.blocks(chunk, block_name, fmt, params)
        log_exposures(request, chunk, block_name, fmt)
        if deadline is not None:
            took = clock() - now
    return blocks


async def post_batch(request: web.Request) -> web.Response:
    try:
        body = await read_body(request)
        read = clock()
        block_name, fmt, ids, params = parse(body)
        budget = deadline_ms(body)
    except BadRequest as exc:
        return exc.answer()
    options = request.app.get(OPTIONS)
    timeout = options.request_timeout if options is not None else ServingOptions().request_timeout
    seconds = TIMEOUT_SHARE * timeout
    if budget is not None:
        seconds = min(seconds, budget / 1000)
    deadline = read + seconds
    groups = fanout.split(request, ids)  # None: every user answered here (one worker)
    late_there = 0  # users their owners answered with the deadline fallback
    try:
        if groups is None:
            blocks: Sequence[Entry] = await sliced_blocks(
                request, ids, block_name, fmt, params, deadline
            )
            late = ids[len(blocks) :]
            if late:
                blocks = [*blocks, *late_blocks(request, late, block_name, fmt, params)]
        else:
            blocks, late, late_there = await fanned_blocks(
                request, body, groups, ids, (block_name, fmt, params), deadline
            )
    except ClientGone as gone:
        return abandoned(request, gone.done, len(ids))
    as_msgpack = wants_msgpack(request)
    encoded = encode_results(ids, blocks, as_msgpack)
    packed = await gzipped(request, encoded)
    content_type = MSGPACK if as_msgpack else "application/json"
    response = web.Response(body=SlicedBody(encoded if packed is None else packed, content_type))
    label(response, packed is not None)
    if budget is not None or late or late_there:
        response.headers[DEADLINE_HEADER] = str(len(late) + late_there)
    return response


def late_blocks(
    request: web.Request, late: list[str], block_name: str, fmt: str, params: BlockParams
) -> list[Block]:
    """The blocks of users left past the deadline: the fallback, rendered once for them all
    (counted)."""
    blocks = request.app[CONTENT].stranger_blocks(late, block_name, fmt, params, "deadline")
    telemetry = request.app.get(TELEMETRY)
    if telemetry is not None:
        telemetry.batch_deadline_fallbacks += len(late)
    return blocks


async def fanned_blocks(
    request: web.Request,
    body: dict[str, Any],
    groups: fanout.Groups,
    ids: list[str],
    what: tuple[str, str, BlockParams],
    deadline: float,
) -> tuple[list[Entry], list[str], int]:
    """The entries of `ids` (in their order) when some users' partitions other workers own
    (api/fanout.py): each owner asked once for its users while this process computes its own;
    the users of an owner that fails are then computed here too (by the same deadline). Also
    the users answered here with the deadline fallback, and how many the owners did."""
    block_name, fmt, params = what
    asked = [
        asyncio.create_task(fanout.ask(request, body, owner, users, deadline))
        for owner, users in groups.remote.items()
    ]
    try:
        here = groups.local
        blocks: list[Block] = await sliced_blocks(request, here, block_name, fmt, params, deadline)
        late = here[len(blocks) :]
        answers = await asyncio.gather(*asked)
    finally:
        for task in asked:
            task.cancel()
    failed = [answer for answer in answers if answer.entries is None]
    fanout.answered_here(request.app, failed)
    if failed:
        extra = [uid for answer in failed for uid in answer.users]
        more = [] if late else await sliced_blocks(request, extra, *what, deadline)
        here, blocks = here[: len(blocks)] + extra, blocks + more
        late += extra[len(more) :]
    mine: dict[str, Entry] = dict(zip(here, blocks, strict=False))
    if late:
        mine.update(zip(late, late_blocks(request, late, block_name, fmt, params), strict=True))
    theirs = [answer.entries for answer in answers if answer.entries is not None]
    late_there = sum(answer.late for answer in answers if answer.entries is not None)
    return merge(ids, mine, *theirs), late, late_there


def register(app: web.Application) -> None:
    app.router.add_post("/v1/blocks:batch", post_batch)
