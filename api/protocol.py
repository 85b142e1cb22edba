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
  aiohttp does.

`ProblemServer` is aiohttp's `Server` whose connections are `ProblemRequestHandler`s and
`ProblemRunner` the `web.AppRunner` serving with it; the runner of the worker and of the readers
(`api.hot.HotRunner`) is one.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse
from aiohttp.web_server import Server

log = logging.getLogger("persona.api")

MAX_DETAIL = 120  # characters of the parser's reason kept in the detail
MAX_LINE = 8190  # aiohttp's limit on a request line and on a header line (its default, kept)


def refusal_detail(exc: BaseException | None) -> str:
    """What a parser refusal's problem body says: aiohttp's reason, cut before any quoted
    input (its messages quote the offending bytes after a colon or in quotes)."""
    if isinstance(exc, LineTooLong):
        return f"the request line or a header line is longer than {MAX_LINE:,} bytes"
    if not isinstance(exc, HttpProcessingError):
        return "the request could not be read"
    reason = str(exc.message or "").replace("\n", " ").replace("\r", " ")
    for mark in (":", "'", '"'):
        reason = reason.split(mark, 1)[0]
    reason = reason.strip()[:MAX_DETAIL].strip()
    return reason or "the request could not be read"


def problem_page(status: int, detail: str) -> Response:
    """The problem response for a connection-level refusal (closes the connection)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    answer = Response(status=status, text=json.dumps(body), content_type="application/problem+json")
    answer.force_close()
    return answer


class ProblemRequestHandler(RequestHandler):
    """aiohttp's request handler whose own refusals are problem bodies (module doc)."""

    __slots__ = ()

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
        log.debug("refused a request from %s: %s", request.remote, exc)
        return problem_page(status, refusal_detail(exc))


class ProblemServer(Server):
    """aiohttp's `Server` whose connections are `ProblemRequestHandler`s."""

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


def rebuilt(server: Server) -> dict[str, Any]:
    """The keyword arguments that build another `Server` like `server` (its request factory,
    settings and loop): for a subclass taking its place."""
    return {
        "request_factory": server.request_factory,
        "handler_cancellation": server.handler_cancellation,
        "loop": server._loop,
        **server._kwargs,
    }


class ProblemRunner(web.AppRunner):
    """`web.AppRunner` whose server is a `ProblemServer`."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        return ProblemServer(server.request_handler, **rebuilt(server))
