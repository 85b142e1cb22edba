"""The hot path: `GET /v1/users/{id}/blocks/{block}`, answered ahead of aiohttp's routing.

Send time is dominated by this route. Two layers serve it, with the same answers as the full
middleware chain (observe, errors, audit, auth, limits, routing, exposures, timeout) gives:

- `HotRunner` (the `web.AppRunner` of the readers and of the worker's own API) puts `front` in
  front of the application:
  a block GET is recognized from the raw request target with a string split, before the router
  resolves it (a walk over every `/v1/users/...` resource, a match object, the middleware
  handlers) and answered from the block cache; its 200/304 answers are written as prebuilt bytes
  (`HotResponse`: the block's header lines are built once per cached block) instead of building
  a header multidict per request. Anything else (another route or method, a target with
  percent-escapes or dot segments, `Expect`) goes to the application unchanged.
- under `HotRunner`, connections are `api.wire.HotRequestHandler`s: a plain keep-alive block GET
  is answered from the connection's bytes before aiohttp parses it (`Front.wire`), and every other
  request reaches `Front` (then the application) through aiohttp as described above.
- `hot_middleware` does the same work as the outermost middleware, for servers started without
  `HotRunner` (tests' plain test servers, an application with `on_response_prepare` signals) and
  for block GETs `Front` hands on (percent-escapes, dot segments, `Expect`).

What the answer is, `api.block_routes.decide` decides for all three (in the chain's order: key
and scope check, 401/403, or 429 for an address with too many failed authentications; rate limit,
429; parameters; the block, a cached lookup, see `api.content`; 304 or 200); each keeps only its
own parsing (an aiohttp request, the raw target, the framed bytes) and writing (aiohttp's
`Response`, `HotResponse`, bytes), and `_record` counts what they answered alike: the audit of a
refusal (`api.audit.refused`, as the audit middleware does), metrics and the access log. No
timeout is needed: none awaits. All hand the request to the full chain whenever it would do
something more: the user's partition belongs to another worker (routing forwards it), or an
experiment is running (exposures are logged).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.web_server import Server
from multidict import CIMultiDict

from api.audit import REFUSED_STATUSES, refused
from api.block_headers import header_lines, response
from api.block_routes import BlockGet, Decision, Gate, decide, get_block, parse_query
from api.content import ContentService
from api.models_routes import ADMIN
from api.observability import TELEMETRY, Telemetry, _request_id, request_id
from api.observability import Seen as Observed
from api.protocol import ProblemRunner, rebuilt
from api.shared import CONTENT, problem
from api.wire import Head, HotServer
from engine.params import NO_PARAMS
from engine.signing import HOP_HEADER

log = logging.getLogger("persona.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def chain_needed(app: web.Application, content: ContentService, user_id: str) -> bool:
    """Whether the middleware chain must answer a block GET for `user_id`. A forwarded request
    (a signed hop) never gets here: the chain verifies it. A caller's own `X-Persona-Routed`
    is no hop: it is routed like any other request (api/routing.py)."""
    models = content.models
    testing = models.experiment is not None or bool(models.content_experiments.experiments)
    if testing and app.get(ADMIN) is not None:
        return True  # exposures_middleware logs the exposure
    # routing_middleware forwards to the owner of the user's partition
    return content.state.owner_url(user_id) is not None


def _record(
    app: web.Application,
    telemetry: Telemetry,
    seen: Observed,
    remote: str | None,
    decision: Decision,
    took: float,
    rid: str,
) -> None:
    """A block GET answered ahead of the chain, counted as the chain counts it: the audit of a
    refusal, the request and the block served (`Telemetry.observe_block`: /metrics, the
    dashboard) and the access log, with the request's id (`rid`) as a request's lines have."""
    token = request_id.set(rid)
    try:
        status = decision.status
        if status in REFUSED_STATUSES:
            refused(app, remote, status, decision.name or "", "GET", seen.path)
        telemetry.observe_block(seen, status, took, decision.block)
    finally:
        request_id.reset(token)


def _failed(method: str, path: str) -> Decision:
    log.exception("unhandled error on %s %s", method, path)
    return Decision(500, None, refusal=problem(500, "Internal Server Error", "see the server log"))


@web.middleware
async def hot_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    if match.route.handler is not get_block or request.method != "GET":
        return await handler(request)
    if HOP_HEADER in request.headers:  # a forwarded request: the chain checks its signature
        return await handler(request)
    user_id = match.get("user_id", "")
    app = request.app
    if chain_needed(app, app[CONTENT], user_id):
        return await handler(request)
    headers = request.headers
    rid = _request_id(headers.get("X-Request-Id"))
    token = request_id.set(rid)
    started = time.perf_counter()
    try:
        fmt, params = parse_query(request.query if request.query_string else None)
        get = BlockGet(
            request.path,
            user_id,
            match.get("block", ""),
            fmt,
            params,
            headers.get("Authorization", ""),
            headers.get("If-None-Match"),
            request.remote,
        )
        decision = decide(Gate.of(request.app), get)
    except Exception:
        decision = _failed(request.method, request.path)
    finally:
        request_id.reset(token)
    took = time.perf_counter() - started
    answer = _response(decision)
    answer.headers["X-Request-Id"] = rid
    _record(app, app[TELEMETRY], request, request.remote, decision, took, rid)
    return answer


def _response(decision: Decision) -> web.Response:
    """aiohttp's `Response` for a decision: the refusal, or the block's 200 or 304."""
    if decision.block is None:
        assert decision.refusal is not None
        return decision.refusal
    return response(decision.block, decision.unchanged)


# -- in front of the application (HotRunner) ----------------------------------------------------

BLOCK_PREFIX = "/v1/users/"
# A request target's path the router sees exactly as written: no percent-escapes (decoded before
# matching), no braces (the route's pattern excludes them), no fragment, nothing but ASCII.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~!$&'()*+,;=:@-]+")
# a query string the application's parser reads as written: no escapes, '+' or ';'
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9/._~!$&'()*,=:@?-]*")
HOP_FIELD = HOP_HEADER.lower().encode()
_NOT_A_SEGMENT = frozenset({"", ".", ".."})  # empty, or a dot segment (URL normalization drops it)
_STATUS_LINES = {200: b"HTTP/1.1 200 OK\r\n", 304: b"HTTP/1.1 304 Not Modified\r\n"}
_REASONS = {200: "OK", 304: "Not Modified"}
_SERVER_LINE = f"Server: {SERVER_SOFTWARE}\r\n\r\n".encode()


class _DateLine:
    """`Date: ...\r\n` as aiohttp formats it (its formatter caches the text for a second)."""

    __slots__ = ("line", "text")

    def __init__(self) -> None:
        self.text = ""
        self.line = b""

    def get(self) -> bytes:
        text = rfc822_formatted_time()
        if text is not self.text:
            self.text = text
            self.line = f"Date: {text}\r\n".encode()
        return self.line


_DATE = _DateLine()


def hot_bytes(status: int, lines: bytes, rid: str, body: bytes | None) -> bytes:
    """A block's whole 200 (with `body`) or 304 (body None) to an HTTP/1.1 keep-alive request:
    the bytes aiohttp's `Response` writes for it (tests/api/test_hot.py compares them)."""
    if body is None:
        return b"".join(
            (
                _STATUS_LINES[status],
                lines,
                b"X-Request-Id: ",
                rid.encode(),
                b"\r\n",
                _DATE.get(),
                _SERVER_LINE,
            )
        )
    return b"".join(
        (
            _STATUS_LINES[status],
            lines,
            b"X-Request-Id: ",
            rid.encode(),
            b"\r\nContent-Length: %d\r\n" % len(body),
            _DATE.get(),
            _SERVER_LINE,
            body,
        )
    )


class HotResponse(web.StreamResponse):
    """A block's 200 or 304 to an HTTP/1.1 keep-alive request, written as one buffer: the status
    line, the block's prebuilt header lines, X-Request-Id, Content-Length (200 only), Date and
    Server, then the body: the bytes aiohttp's `Response` writes for the same answer
    (tests/api/test_hot.py compares them), without a header multidict per request. `headers`
    is built only if something asks for it."""

    def __init__(self, status: int, lines: bytes, rid: str, body: bytes | None) -> None:
        # StreamResponse.__init__ is not called: its header multidict is what this class avoids
        self._state: dict[Any, Any] = {}
        self._status = status
        self._reason = _REASONS[status]
        self._keep_alive = True
        self._lines = lines
        self._rid = rid
        self._hot_body = body

    def __getattr__(self, name: str) -> Any:  # only for what __init__ did not set
        if name != "_headers":
            raise AttributeError(name)
        headers: CIMultiDict[str] = CIMultiDict()
        for line in self._lines.decode().split("\r\n"):
            if line:
                key, _, value = line.partition(": ")
                headers.add(key, value)
        headers["X-Request-Id"] = self._rid
        if self._hot_body is not None:
            headers["Content-Length"] = str(len(self._hot_body))
        self._headers = headers
        return headers

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        data = hot_bytes(self._status, self._lines, self._rid, self._hot_body)
        transport.write(data)
        self._eof_sent = True
        self._body_length = len(data)  # what aiohttp counts: headers included
        writer = request.writer
        await writer.drain()  # as aiohttp's write_eof: wait while the transport is paused
        return writer


class Front:
    """The server's request handler in front of the application (see the module doc): answers
    block GETs it can recognize from the raw target, hands everything else to `fallback` (the
    application's own handler)."""

    def __init__(
        self,
        app: web.Application,
        fallback: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    ) -> None:
        self.app = app
        self.fallback = fallback
        self.gate = Gate.of(app)
        self.telemetry = app[TELEMETRY]

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            response = self.answer(request)
            if response is not None:
                return response
        return await self.fallback(request)

    def answer(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """The answer to a block GET, or None when the application must answer `request`."""
        get = self._parse(request)
        if get is None:
            return None
        rid = _request_id(request.headers.get("X-Request-Id"))
        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            decision = decide(self.gate, get)
        except Exception:
            decision = _failed(request.method, request.path)
        finally:
            request_id.reset(token)
        took = time.perf_counter() - started
        answer = _block_response(request, decision, rid)
        _record(self.app, self.telemetry, request, request.remote, decision, took, rid)
        return answer

    def _parse(self, request: web.BaseRequest) -> BlockGet | None:
        """The block GET of a request's raw target and headers; None for anything else, or for
        what the application answers (expectations, signed hops, block parameters, the chain)."""
        route = block_route(request.raw_path)
        if route is None:
            return None
        path, query, user_id, block_name = route
        headers = request.headers
        if headers.get("Expect") or HOP_HEADER in headers:
            return None  # the application answers expectations and checks hop signatures
        if chain_needed(self.app, self.gate.content, user_id):
            return None
        fmt = "html"
        if query:
            parsed = request.query
            if len(parsed) > 1 or (parsed and "format" not in parsed):
                return None  # block parameters, `format` twice: `hot_middleware` parses them
            fmt = parsed.get("format", "html")
        authorization = headers.get("Authorization", "")
        if_none_match = headers.get("If-None-Match")
        return BlockGet(path, user_id, block_name, fmt, NO_PARAMS, authorization, if_none_match,
                        request.remote)  # fmt: skip

    def wire(self, head: Head) -> bytes | None:
        """The whole answer (bytes to write) to a request framed by `HotRequestHandler`
        (api/wire.py) when it is a block GET answered 200 or 304 on a keep-alive HTTP/1.1
        connection, counted as `answer` counts it; None when aiohttp must answer it (anything
        else, refusals and error pages included: aiohttp's path gives them, counts them,
        refuses a rate-limited key again, and counts a failed authentication against the peer
        address once: `answer` does; `decide` tentatively counts nothing of a request it hands
        on)."""
        get = self._parse_head(head)
        if get is None:
            return None
        rid_field = head.fields.get(b"x-request-id")
        rid = _request_id(rid_field.decode("ascii") if rid_field is not None else None)
        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            decision = decide(self.gate, get, tentative=True)
        except Exception:
            log.exception("unhandled error on GET %s (handed to the application)", get.path)
            return None
        finally:
            request_id.reset(token)
        block = decision.block
        if block is None:
            return None
        lines = decision.lines
        assert lines is not None  # a tentative decision has them
        data = hot_bytes(decision.status, lines, rid, None if decision.unchanged else block.body)
        took = time.perf_counter() - started
        _record(self.app, self.telemetry, Seen("GET", get.path), None, decision, took, rid)
        return data

    def _parse_head(self, head: Head) -> BlockGet | None:
        """The block GET of a framed request head; None for anything else, or for what aiohttp
        answers (see `wire`)."""
        if head.method != b"GET" or head.version != b"HTTP/1.1":
            return None
        fields = head.fields
        connection = fields.get(b"connection")
        if connection is not None and connection.lower() != b"keep-alive":
            return None  # close (or anything else): aiohttp's response writes the connection
        if b"expect" in fields or HOP_FIELD in fields:
            return None  # expectations, and signed hops (the application checks them)
        route = block_route(head.target.decode("ascii"))  # ASCII: the framing checked it
        if route is None:
            return None
        path, query, user_id, block_name = route
        if query and _PLAIN_QUERY.fullmatch(query) is None:
            return None  # percent-escapes, '+', ';': the application's query parser decides
        if chain_needed(self.app, self.gate.content, user_id):
            return None
        fmt = _format(query) if query else "html"
        if fmt is None:
            return None  # block parameters: the application parses them
        authorization = fields.get(b"authorization", b"").decode("ascii")
        if_none_match = fields.get(b"if-none-match")
        etags = if_none_match.decode("ascii") if if_none_match is not None else None
        return BlockGet(path, user_id, block_name, fmt, NO_PARAMS, authorization, etags, None)


def block_route(target: str) -> tuple[str, str, str, str] | None:
    """(path, query, user id, block name) of a request target the router would send to the
    block route exactly as written (plain, see `_PLAIN_PATH`); None for any other target."""
    if not target.startswith(BLOCK_PREFIX):
        return None
    path, _, query = target.partition("?")
    parts = path.split("/")  # "", "v1", "users", user id, "blocks", block
    if len(parts) != 6 or parts[4] != "blocks":
        return None
    user_id, block_name = parts[3], parts[5]
    if (
        user_id in _NOT_A_SEGMENT
        or block_name in _NOT_A_SEGMENT
        or _PLAIN_PATH.fullmatch(path) is None
    ):
        return None
    return path, query, user_id, block_name


def _format(query: str) -> str | None:
    """The `format` parameter of a plain query string; None when it holds any other parameter
    (engine.params) or `format` twice (a 400): the application parses those."""
    fmt: str | None = None
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "format" and fmt is None:
            fmt = value
        elif pair:
            return None
    return "html" if fmt is None else fmt


class Seen:
    """What the access log reads of a request answered from the wire (`Telemetry._log`)."""

    __slots__ = ("method", "path")

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path


def _block_response(request: web.BaseRequest, decision: Decision, rid: str) -> web.StreamResponse:
    """`Front.answer`'s writing: a block's 200 or 304 as `HotResponse` on a keep-alive HTTP/1.1
    connection, else (refusals, errors, HTTP/1.0, closing connections, header lines that cannot
    be written raw) aiohttp's `Response`."""
    block = decision.block
    if block is not None and request.version == HttpVersion11 and request.keep_alive:
        lines = header_lines(block, decision.unchanged)
        if lines is not None and "\n" not in rid:
            body = None if decision.unchanged else block.body
            return HotResponse(decision.status, lines, rid, body)
    answer = _response(decision)  # HTTP/1.0 or closing connections: aiohttp writes those headers
    answer.headers["X-Request-Id"] = rid
    return answer


class HotRunner(ProblemRunner):
    """`web.AppRunner` whose server hands requests to `Front` before the application (an
    application with `on_response_prepare` signals, which `HotResponse` would skip, keeps its own
    handler; `hot_middleware` still serves it). Either way, what aiohttp refuses before the
    application sees it is answered with a problem body (`api.protocol.ProblemRunner`)."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        app = self.app
        if app.on_response_prepare or CONTENT not in app or TELEMETRY not in app:
            return server
        # the same server, with `Front` before the application and connections that answer
        # plain block GETs from the wire (api/wire.py)
        return HotServer(Front(app, server.request_handler), **rebuilt(server))
