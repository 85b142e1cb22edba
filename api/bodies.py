"""Request bodies of the send-time routes (batch, render): JSON or msgpack, decoded once per
request (the rate limit reads them first to count the recipients), and their 400 problem."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from aiohttp import web

from api.encodings import read_whole
from api.shared import problem
from engine.params import InvalidParam

MSGPACK = "application/msgpack"


class BadRequest(ValueError):
    def __init__(self, detail: str, parameter: str | None = None) -> None:
        super().__init__(detail)
        self.parameter = parameter  # the block parameter it is about, if one

    @classmethod
    def of(cls, exc: InvalidParam) -> BadRequest:
        return cls(str(exc), exc.name)

    def answer(self) -> web.Response:
        """The 400 problem (naming the parameter, if one)."""
        if self.parameter is None:
            return problem(400, "Bad request", str(self))
        return problem(400, "Bad parameter", str(self), parameter=self.parameter)


BODY = web.RequestKey("decoded_body", object)  # read_body's result, decoded once per request


async def read_body(request: web.Request) -> Any:
    """The request body as JSON or msgpack (by Content-Type); BadRequest if it is neither.
    Decoded once per request (the rate limit reads it first to count the recipients)."""
    if BODY in request:
        return request[BODY]
    raw = await read_whole(request)
    try:
        if request.content_type in (MSGPACK, "application/x-msgpack"):
            body = msgpack.unpackb(raw, raw=False)
        else:
            body = json.loads(raw)
    except Exception as exc:
        raise BadRequest(f"the body is not valid JSON or msgpack: {exc}") from None
    request[BODY] = body
    return body
