"""Connections whose refusals are problem bodies too.

Before a request reaches the application (and its `errors` middleware), aiohttp's connection
handler may refuse it: its HTTP parser rejects a request line or header line over 8,190 bytes,
a malformed request line, a bad header, a bad chunk, an unknown method; a handler that fails
outside every middleware is a 500. aiohttp writes those answers as `text/plain` (or HTML) pages,
where the API document promises RFC 9457 `application/problem+json` for every error.
`ProblemRequestHandler` is aiohttp's `RequestHandler` writing them as problem bodies instead:

- the status is aiohttp's (400 for what its parser refuses, 500 otherwise); the title is the
  status's phrase; the detail is the parser's reason (without the offending bytes: a
  hostile client does not get its own input echoed back, and a 500 says nothing of the
  exception);
- the connection is closed afterwards, as aiohttp does (the parser cannot tell where the next
  request would start);
- a refusal of the parser is logged at debug level without a traceback (anyone can send such
  bytes, so they must not fill an operator's log); a 500 is logged with its traceback, as
  aiohttp does;
- a body in a coding the parser cannot inflate here (`br`, `zstd`) is a 415 naming the ones
  that are read (api/encodings.py), where aiohttp's parser answered 400 (`ProblemServer`'s
  parser inflates nothing, `auto_decompress=False`: api/encodings.py reads gzip and deflate
  bodies and refuses the rest before reading them; this stays for a parser that does);
- `discard_body`: what a connection receives after an answer that left an encoded body unread
  is taken without being parsed, so aiohttp's lingering close does not inflate it
  (api/encodings.py `body_middleware`).

Connections are bounded too, since each holds a file descriptor the process shares with RocksDB
and its Kafka clients (a flood of connections must not leave the store unable to open a file):

- at most `max_connections` open at once (default: the process's descriptor limit less a reserve,
  `connection_cap`); a connection beyond that is answered `503` with a problem body and
  `Retry-After: 1` and closed at once, and a warning is logged (at most once a minute);
  `/metrics` reports `persona_http_connections` (open), `persona_http_connections_max` (the cap)
  and `persona_http_connections_refused_total`;
- a connection without a request in progress is closed `KEEPALIVE_SECONDS` after its last answer
  (or after it opened): aiohttp's default is an hour. A request head that trickles in counts as no
  request: a client sending a byte now and then cannot hold a connection longer than that.
- a connection whose client does not take its answers is aborted when its writing has stayed
  paused for `SEND_STALL_SECONDS` (30 s): the kernel's send buffer full and more than 64 KiB
  (the transport's high-water mark) waiting in the process, not drained to 16 KiB (its low-water
  mark) all that time, i.e. under ~1.6 KB/s. A request being written is never idle, so no
  keep-alive deadline applied: a sender that asked (pipelined block GETs, 1000-user batches)
  and never read held the connection and every answer queued in it, hundreds of KB to MBs
  each, for as long as its socket stayed open. The answers are dropped (the buffer freed at
  once, the connection reset), counted in `persona_http_connections_stalled_total`, and a line
  at info level says so. A client reading slowly but steadily resumes the writing each time it
  drains and is never cut.

`ProblemServer` is aiohttp's `Server` whose connections are `ProblemRequestHandler`s and
`ProblemRunner` the `web.AppRunner` serving with it; the runner of the worker and of the readers
(`api.hot.HotRunner`) is one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import resource
import time
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse
from aiohttp.web_server import Server

from api.encodings import BODY_CODINGS, unsupported
from api.observability import TELEMETRY
from api.shared import problem

log = logging.getLogger("persona.api")

MAX_DETAIL = 120  # characters of the parser's reason kept in the detail
# where aiohttp's reasons start quoting the input: after a colon, or at a quoted repr
_QUOTED = re.compile(r":|\s(?:b?['\"])")
MAX_LINE = 8190  # aiohttp's limit on a request line and on a header line (its default, kept)
KEEPALIVE_SECONDS = 75.0  # an idle connection's life (nginx's keepalive_timeout default)
SEND_STALL_SECONDS = 30.0  # a connection's writing paused this long (its client reads nothing)
FD_RESERVE = 4096  # descriptors kept for RocksDB, Kafka and files beyond the connections
BUSY_WARN_EVERY = 60.0  # seconds between two warnings of refused connections
_BUSY_BODY = json.dumps(
    {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "this process has as many connections open as it serves; retry shortly",
    }
).encode()
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(_BUSY_BODY)
) + _BUSY_BODY


def connection_cap(limit: int | None = None) -> int:
    """How many connections a process keeps open at once: its descriptor limit (`limit`, default
    the soft RLIMIT_NOFILE) less FD_RESERVE, or half of it when the limit is small (a limit of
    1,024, common, gives 512); at least 16."""
    if limit is None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit == resource.RLIM_INFINITY:
            limit = 1 << 20
    return max(16, limit - FD_RESERVE, limit // 2)


def refusal_detail(exc: BaseException | None) -> str:
    """What a parser refusal's problem body says: aiohttp's reason, cut before any quoted
    input (its messages quote the offending bytes after a colon or as a repr in quotes)."""
    if isinstance(exc, LineTooLong):
        return f"the request line or a header line is longer than {MAX_LINE:,} bytes"
    if not isinstance(exc, HttpProcessingError):
        return "the request could not be read"
    reason = str(exc.message or "").replace("\n", " ").replace("\r", " ")
    reason = _QUOTED.split(reason, maxsplit=1)[0].strip()[:MAX_DETAIL].strip()
    return reason or "the request could not be read"


def undecodable(exc: BaseException | None) -> bool:
    """Whether aiohttp's parser refused a request for a body coding it cannot inflate here
    (`br` or `zstd` without their libraries: it says so before the body is read), not for a
    gzip or deflate body that does not inflate."""
    if not isinstance(exc, ContentEncodingError):
        return False
    reason = str(exc.message or "").lower()
    return not reason.rstrip(". ").endswith(BODY_CODINGS)


def problem_page(status: int, detail: str) -> Response:
    """The problem response for a connection-level refusal (closes the connection)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    answer = problem(status, title, detail)
    answer.force_close()
    return answer


class ProblemRequestHandler(RequestHandler):
    """aiohttp's request handler whose own refusals are problem bodies, refusing connections
    beyond its server's cap (module doc)."""

    __slots__ = ("_discarded", "_discarding", "_stall")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._discarding = False
        self._discarded: Any = None  # the body whose rest is discarded (its StreamReader)
        self._stall: asyncio.TimerHandle | None = None  # aborts a connection whose client stalls

    def pause_writing(self) -> None:
        """The transport's buffer went over its high-water mark: the client is not taking the
        answers as fast as they come. If it takes none for the server's `send_stall` seconds,
        the connection is aborted (module doc)."""
        super().pause_writing()
        manager = self._manager
        if self._stall is None and isinstance(manager, ProblemServer):
            self._stall = self._loop.call_later(manager.send_stall, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def _unstall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        transport = self.transport
        manager = self._manager
        if transport is None or not self.writing_paused or not isinstance(manager, ProblemServer):
            return
        manager.stalled += 1
        peer = transport.get_extra_info("peername")
        log.info(
            "dropped a connection from %s: its client took none of the %d bytes of answers "
            "waiting for it in %g s",
            peer[0] if isinstance(peer, tuple) and peer else peer,
            transport.get_write_buffer_size(),
            manager.send_stall,
        )
        transport.abort()  # the buffer is freed now; close() would wait for the client

    def discard_body(self, payload: Any = None) -> None:
        """From now on, take what the connection receives without parsing it: for the rest of a
        request body left unread by an answer that closes the connection. aiohttp would read
        that rest for up to 10 s (its lingering close, so that the client reads the answer
        rather than a reset) through its parser, inflating a compressed body whole; the bytes
        are still taken (no reset), at no cost. `payload` (the request's body stream) is ended
        when the client goes: the lingering close waits for its end, which nothing feeds any
        more, so it held the connection's task the whole 10 s after the client had gone."""
        self._discarding = True
        self._discarded = payload

    def connection_lost(self, exc: BaseException | None) -> None:
        self._unstall()
        super().connection_lost(exc)
        payload, self._discarded = self._discarded, None
        if payload is not None:
            payload.feed_eof()

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        super().data_received(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        if isinstance(manager, ProblemServer) and manager.full():
            manager.refused(transport)
            self._manager = None  # connection_lost then has nothing to undo
            self._force_close = True
            return
        super().connection_made(transport)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        if request.writer.output_size > 0:  # part of an answer is out: nothing can follow it
            return super().handle_error(request, status, exc, message)
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            return problem_page(status, "the server failed to answer this request")
        if undecodable(exc):  # `br`, `zstd`: aiohttp knows them, this process cannot inflate them
            log.debug("refused a request from %s: a body coding not read here", request.remote)
            return unsupported(
                f"the body's Content-Encoding is not read here: send it as is, or "
                f"in one of {', '.join(BODY_CODINGS)}"
            )
        # what the client is told, cut before the bytes the parser quotes: those may hold an
        # Authorization header, a `?key=` or a click token (`str(exc)` wrote them in the log)
        reason = refusal_detail(exc)
        log.debug("refused a request from %s: %s: %s", request.remote, type(exc).__name__, reason)
        return problem_page(status, reason)


class ProblemServer(Server):
    """aiohttp's `Server` whose connections are `ProblemRequestHandler`s, at most
    `max_connections` of them open (default `connection_cap()`). Its parser leaves gzip and
    deflate bodies as they were sent (`auto_decompress=False`, whatever it is given): they are
    inflated, and their streams checked to their end, by the body readers (`api.encodings`)."""

    def __init__(
        self,
        *args: Any,
        max_connections: int | None = None,
        send_stall: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **{**kwargs, "auto_decompress": False})
        self.max_connections = connection_cap() if max_connections is None else max_connections
        # seconds a connection's writing may stay paused before it is aborted (module doc)
        self.send_stall = SEND_STALL_SECONDS if send_stall is None else send_stall
        self.refusals = 0  # connections refused for the cap
        self.stalled = 0  # connections aborted: their clients took no answer for `send_stall`
        self._warned_at = -BUSY_WARN_EVERY

    def full(self) -> bool:
        return len(self._connections) >= self.max_connections

    def refused(self, transport: asyncio.BaseTransport) -> None:
        """Answer a connection beyond the cap with a 503 and close it."""
        self.refusals += 1
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(BUSY)
        transport.close()
        now = time.monotonic()
        if now - self._warned_at >= BUSY_WARN_EVERY:
            self._warned_at = now
            log.warning(
                "%d connections are open, the most this process keeps (its descriptor limit "
                "less a reserve): refusing new ones with 503 (%d so far); raise `ulimit -n` "
                "or add readers",
                len(self._connections),
                self.refusals,
            )

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)

    def metric_lines(self) -> list[str]:
        """This process's connection figures in Prometheus text."""
        return [
            "# HELP persona_http_connections Client connections open in this process.",
            "# TYPE persona_http_connections gauge",
            f"persona_http_connections {len(self._connections)}",
            "# HELP persona_http_connections_max The most connections this process keeps open.",
            "# TYPE persona_http_connections_max gauge",
            f"persona_http_connections_max {self.max_connections}",
            "# HELP persona_http_connections_refused_total Connections refused (503) at the cap.",
            "# TYPE persona_http_connections_refused_total counter",
            f"persona_http_connections_refused_total {self.refusals}",
            "# HELP persona_http_connections_stalled_total Connections aborted: their clients took"
            " no answer bytes while SEND_STALL_SECONDS (30 s) passed.",
            "# TYPE persona_http_connections_stalled_total counter",
            f"persona_http_connections_stalled_total {self.stalled}",
        ]


def rebuilt(server: Server) -> dict[str, Any]:
    """The keyword arguments that build another `Server` like `server` (its request factory,
    settings and loop): for a subclass taking its place."""
    return {
        "max_connections": getattr(server, "max_connections", None),
        "send_stall": getattr(server, "send_stall", None),
        "request_factory": server.request_factory,
        "handler_cancellation": server.handler_cancellation,
        "loop": server._loop,
        **server._kwargs,
    }


class ProblemRunner(web.AppRunner):
    """`web.AppRunner` whose server is a `ProblemServer` (at most `max_connections` open, default
    `connection_cap()`), its connections idle at most KEEPALIVE_SECONDS unless told otherwise."""

    def __init__(
        self, app: web.Application, *, max_connections: int | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_SECONDS)
        super().__init__(app, **kwargs)
        self._max_connections = max_connections

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        problem_server = ProblemServer(
            server.request_handler, **{**rebuilt(server), "max_connections": self._max_connections}
        )
        telemetry = self.app.get(TELEMETRY)
        if telemetry is not None:
            telemetry.text_sources.append(self._metric_lines)
        return problem_server

    def _metric_lines(self) -> list[str]:
        """The figures of the server that serves (a subclass may build it from this one's)."""
        server = self.server
        return server.metric_lines() if isinstance(server, ProblemServer) else []
