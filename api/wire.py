"""Block GETs answered from the connection's bytes, ahead of aiohttp's parser.

aiohttp's request handler parses a request in C, then hands it to a per-connection task through
a queue and builds a `BaseRequest`, a `StreamReader` payload and a `StreamWriter`: most of the
CPU a block GET costs. `HotRequestHandler` is aiohttp's `RequestHandler` with one step in front:
it frames the requests in what the connection received (head up to CRLF CRLF, then the body
Content-Length gives) and answers each plain keep-alive block GET on the spot with the bytes
`Front` would write (`Front.wire`, api/hot.py). Everything else goes to aiohttp's own parser and
handler unchanged, message by message, in the order received:

- a request `Front.wire` does not answer (another route or method, HTTP/1.0, `Connection:
  close`, `Expect`, a refusal, an error page, a routed user, a running experiment, a target with
  percent-escapes): that whole message, so aiohttp answers it exactly as before;
- every message that arrives while aiohttp still has one to answer, or while the connection's
  writing is paused (a client that does not read): answers stay in request order, and
  back-pressure is aiohttp's;
- for good, from the first byte it cannot frame with certainty: `Transfer-Encoding`, `Upgrade`,
  `CONNECT`, `Expect` (the client sends the body only after aiohttp's 100 Continue), a malformed
  or duplicate `Content-Length`, control characters, bytes outside ASCII,
  a CR or LF outside a CRLF, a head over 8,190 bytes or a body over 1 MiB. aiohttp's parser then
  reads the connection from that byte on and refuses what it must.

aiohttp's parser never holds part of a message the front could also read, so the two never
disagree on where a request starts. The connection's keep-alive deadline moves with the answers
(aiohttp closes connections whose handler sat idle that long). Connections are aiohttp's in
every other way: tracked, shut down and closed by its server.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from aiohttp.web_protocol import RequestHandler

from api.protocol import ProblemRequestHandler, ProblemServer

if TYPE_CHECKING:
    from api.hot import Front

log = logging.getLogger("persona.api")

HEAD_END = b"\r\n\r\n"
# aiohttp refuses request and header lines over 8,190 bytes: a head that long is its to read
# (and refuse, if one of its lines is), never the front's to answer
MAX_HEAD = 8190
MAX_BODY = 1024 * 1024  # larger bodies stream through aiohttp's parser
# Bytes aiohttp's parser might read otherwise than the framing here: control characters other
# than HTAB, DEL and non-ASCII, a CR not followed by LF, an LF not preceded by CR.
_ODD = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\xff]|\r(?!\n)|(?<!\r)\n")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# the attributes of aiohttp's RequestHandler the front reads (checked once per connection)
_AIOHTTP_STATE = (
    "_messages",
    "_waiter",
    "_paused",
    "_close",
    "_force_close",
    "_payload_parser",
    "_upgraded",
    "_next_keepalive_close_time",
    "_keepalive_timeout",
    "_process_keepalive",
    "_loop",
)
_warned: list[bool] = []


class Head:
    """A request head as framed here: the request line's three parts and the header fields,
    names lower-cased, the first value of each name kept (as aiohttp's `headers.get` gives)."""

    __slots__ = ("fields", "method", "target", "version")

    def __init__(
        self, method: bytes, target: bytes, version: bytes, fields: dict[bytes, bytes]
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.fields = fields


def parse_head(head: bytes) -> tuple[Head | None, int] | None:
    """(the head, its body's length) of `head` (the bytes before CRLF CRLF; Head None for a
    request line that is not three parts), or None when the message cannot be framed with
    certainty (see the module doc)."""
    if _ODD.search(head) is not None:
        return None
    lines = head.split(b"\r\n")
    fields: dict[bytes, bytes] = {}
    length = 0
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or _TOKEN.fullmatch(name) is None:
            return None
        key = name.lower()
        value = value.strip(b" \t")
        if key == b"content-length":
            if key in fields or not value.isdigit():
                return None
            length = int(value)
            if length > MAX_BODY:
                return None
        elif key in (b"transfer-encoding", b"upgrade", b"expect"):
            return None  # `Expect`: the client waits for 100 Continue before sending the body
        if key not in fields:
            fields[key] = value
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None, length
    if parts[0] == b"CONNECT":
        return None
    return Head(parts[0], parts[1], parts[2], fields), length


class HotServer(ProblemServer):
    """aiohttp's `Server` whose connections are `HotRequestHandler`s answering through
    `front` (and whose refusals are problem bodies, api/protocol.py)."""

    def __init__(self, front: Front, *args: Any, **kwargs: Any) -> None:
        super().__init__(front, *args, **kwargs)
        self.front = front

    def __call__(self) -> RequestHandler:
        return HotRequestHandler(self, loop=self._loop, **self._kwargs)


class HotRequestHandler(ProblemRequestHandler):
    """aiohttp's request handler with the block GET front in front of its parser (module doc)."""

    __slots__ = ("_answered", "_front", "_pending", "_sticky")

    def __init__(self, manager: HotServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._pending = b""  # received bytes not yet framed: part of a message
        self._sticky = False  # aiohttp's parser reads everything from now on
        self._answered = False  # answers written since the keep-alive deadline was last set
        self._front: Front | None = manager.front
        if not all(hasattr(self, name) for name in _AIOHTTP_STATE):
            self._front = None  # another aiohttp: its own parser serves every request
            if not _warned:
                _warned.append(True)
                log.warning("aiohttp's request handler changed: block GETs take its parser")

    def _idle(self) -> bool:
        """Whether aiohttp has answered everything it was given and waits for a request."""
        waiter = self._waiter
        return (
            waiter is not None
            and not waiter.done()
            and not self._messages
            and not self._paused
            and self.transport is not None
        )

    def data_received(self, data: bytes) -> None:
        front = self._front
        if (
            not data
            or front is None
            or self._sticky
            or self._close
            or self._force_close
            or self._discarding
        ):
            # no bytes: aiohttp calls this itself to parse on what its parser holds (a body it
            # stopped feeding while the handler's buffer was full); it must reach the parser
            super().data_received(data)
            return
        if self._pending:
            data = self._pending + data
            self._pending = b""
        answers: list[bytes] = []
        pos = 0
        size = len(data)
        while pos < size:
            end = data.find(HEAD_END, pos)
            if end < 0:
                tail = size - 1 if data.endswith(b"\r") else size  # its LF may come next
                if size - pos > MAX_HEAD or _ODD.search(data, pos, tail) is not None:
                    self._stick(answers, data, pos)
                    return
                break
            framed = parse_head(data[pos:end]) if end - pos <= MAX_HEAD else None
            if framed is None:
                self._stick(answers, data, pos)
                return
            head, length = framed
            stop = end + 4 + length
            if stop > size:
                break  # the rest of the body is still to come
            if head is not None and not length and self._idle():
                answer = front.wire(head)
                if answer is not None:
                    answers.append(answer)
                    pos = stop
                    continue
            # aiohttp answers this message (after the answers written so far)
            if answers:
                self._write(answers)
                answers = []
            super().data_received(data[pos:stop])
            pos = stop
        if answers:
            self._write(answers)
        if pos < size:
            self._pending = data[pos:]

    def _write(self, answers: list[bytes]) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(answers[0] if len(answers) == 1 else b"".join(answers))
        self._answered = True

    def _process_keepalive(self) -> None:
        """aiohttp's keep-alive check (its handler sat idle until the deadline: close), with
        the deadline moved first when the front answered since it was set: a connection closes
        after at least the keep-alive timeout without a request (at most twice that), without
        reading the clock per answer."""
        if self._answered:
            self._answered = False
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        super()._process_keepalive()

    def _stick(self, answers: list[bytes], data: bytes, pos: int) -> None:
        if answers:
            self._write(answers)
        self._sticky = True
        if pos < len(data):
            super().data_received(data[pos:])
